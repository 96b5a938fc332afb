//! The Docker engine behind the proxy: one HTTP/1.1 connection per request over its unix socket (so
//! a hijacked stream owns its connection), and lookups of the objects requests name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::policy::{Found, Known};
use super::route::{Kind, Object};
use super::{ProxyBody, ProxyError};

/// The largest lookup answer read (an inspect of a container with many mounts is a few KiB).
const MAX_LOOKUP_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct Upstream {
    socket: PathBuf,
}

impl Upstream {
    pub fn new(socket: PathBuf) -> Upstream {
        Upstream { socket }
    }

    /// Sends one request on a new connection that is kept open for an upgrade (exec, attach).
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|error| ProxyError::Engine(format!("{}: {error}", self.socket.display())))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ProxyError::Engine(error.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "a connection to the Docker engine ended with an error");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|error| ProxyError::Engine(error.to_string()))
    }

    /// GETs a JSON document: Ok(Ok(json)) on 200, Ok(Err((status, message))) when the engine
    /// answered otherwise.
    pub async fn get_json(&self, path: &str) -> Result<Result<Value, (u16, String)>, ProxyError> {
        let request = Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|error| ProxyError::Engine(error.to_string()))?;
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_LOOKUP_BYTES)
            .collect()
            .await
            .map_err(|error| ProxyError::Engine(format!("reading {path}: {error}")))?
            .to_bytes();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(Ok(json));
        }
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        Ok(Err((status, message)))
    }

    /// Asks the engine what a reference names.
    pub async fn resolve(&self, object: &Object) -> Result<Found, ProxyError> {
        if !is_plain_reference(&object.reference) {
            return Ok(Found::Missing {
                status: 400,
                message: format!("{:?} is not a valid object name", object.reference),
            });
        }
        let reference = &object.reference;
        let path = match object.kind {
            Kind::Container => format!("/containers/{reference}/json"),
            Kind::Exec => format!("/exec/{reference}/json"),
            Kind::Network => format!("/networks/{reference}"),
            Kind::Volume => format!("/volumes/{reference}"),
        };
        let json = match self.get_json(&path).await? {
            Ok(json) => json,
            Err((status, message)) => return Ok(Found::Missing { status, message }),
        };
        Ok(found(object.kind, &json))
    }
}

/// A name, id or id prefix as the engine allows them; others are never put in a path.
fn is_plain_reference(reference: &str) -> bool {
    !reference.is_empty()
        && reference.len() <= 256
        && reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && reference != "."
        && reference != ".."
}

/// What an inspect answer says about its object. Pure.
pub fn found(kind: Kind, json: &Value) -> Found {
    fn text(value: Option<&Value>) -> &str {
        value.and_then(Value::as_str).unwrap_or_default()
    }
    let labels = |value: Option<&Value>| -> BTreeMap<String, String> {
        value
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    match kind {
        Kind::Exec => Found::Exec {
            id: text(json.get("ID")).to_string(),
            container: text(json.get("ContainerID")).to_string(),
        },
        Kind::Container => Found::Object(Known {
            id: text(json.get("Id")).to_string(),
            name: text(json.get("Name")).to_string(),
            labels: labels(json.get("Config").and_then(|config| config.get("Labels"))),
            host_path: false,
        }),
        Kind::Network => Found::Object(Known {
            id: text(json.get("Id")).to_string(),
            name: text(json.get("Name")).to_string(),
            labels: labels(json.get("Labels")),
            host_path: false,
        }),
        Kind::Volume => {
            let options = json.get("Options");
            let option = |key: &str| text(options.and_then(|o| o.get(key)));
            Found::Object(Known {
                id: text(json.get("Name")).to_string(),
                name: text(json.get("Name")).to_string(),
                labels: labels(json.get("Labels")),
                host_path: !option("device").is_empty() || option("o").contains("bind"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inspect_answers_become_known_objects() {
        let container = json!({"Id": "abc", "Name": "/web", "Config": {"Labels": {"a": "b"}}});
        let Found::Object(known) = found(Kind::Container, &container) else {
            panic!("a container");
        };
        assert_eq!((known.id.as_str(), known.name.as_str()), ("abc", "/web"));
        assert_eq!(known.labels["a"], "b");
        let volume = json!({"Name": "v", "Labels": null, "Options": {"device": "/srv", "o": "bind", "type": "none"}});
        assert!(matches!(
            found(Kind::Volume, &volume),
            Found::Object(Known {
                host_path: true,
                ..
            })
        ));
        let plain = json!({"Name": "v", "Options": null});
        assert!(matches!(
            found(Kind::Volume, &plain),
            Found::Object(Known {
                host_path: false,
                ..
            })
        ));
        let exec = json!({"ID": "e", "ContainerID": "c"});
        assert_eq!(
            found(Kind::Exec, &exec),
            Found::Exec {
                id: "e".into(),
                container: "c".into()
            }
        );
    }

    #[test]
    fn only_plain_references_reach_a_path() {
        assert!(is_plain_reference("web_1.a-b"));
        for bad in ["", "..", "a/b", "a?b", "a b", "a%2f"] {
            assert!(!is_plain_reference(bad), "{bad}");
        }
    }
}
