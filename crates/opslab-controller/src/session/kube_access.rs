//! Kubernetes mode: a session's sandbox gets a kubeconfig for a ServiceAccount of the agent's own,
//! with a token minted for the session (TokenRequest) that ends with it. The API server grants no
//! token shorter than ten minutes, so the token is bound to an empty Secret made for the session:
//! deleting that Secret when the session ends makes the API server refuse the token at once (it
//! checks the bound object on every request). The token is a secret: the store's redactor holds it
//! while the session runs (so it is never stored, logged or sent to the model), and it reaches the
//! sandbox only, through an exec's stdin.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::json;
use tokio::sync::OnceCell;
use tracing::debug;

use crate::config::{AgentKubeAccess, KubeSettings};
use crate::{Error, Result};

/// Where kubectl looks by default, as `HOME` is the work folder.
pub const KUBECONFIG_PATH: &str = "/work/.kube/config";
/// The shortest lifetime the API server grants a requested token.
const MIN_LIFETIME: Duration = Duration::from_secs(600);
/// The label that names the session a token-binding Secret belongs to.
pub const SESSION_LABEL: &str = "opslab.dev/session";

/// Mints sessions' tokens; connects on first use.
pub struct KubeAccess {
    access: AgentKubeAccess,
    settings: KubeSettings,
    connected: OnceCell<Connected>,
}

struct Connected {
    service_accounts: Api<ServiceAccount>,
    /// The sessions' token-binding Secrets, beside the agent's ServiceAccount.
    secrets: Api<Secret>,
    namespace: String,
    server: String,
    /// The API server's CA as PEM; None when the controller trusts the system's roots.
    ca_pem: Option<String>,
    insecure: bool,
}

/// A session's kubeconfig, the token in it, and what the token is bound to.
pub struct Issued {
    pub kubeconfig: String,
    pub token: String,
    pub binding: TokenBinding,
}

/// The Secret a session's token is bound to: deleting it revokes the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBinding {
    pub name: String,
    uid: String,
}

/// The token-binding Secret's name for a session (its id is a UUID: a valid name).
pub fn binding_name(session: &str) -> String {
    format!("opslab-session-{session}")
}

impl KubeAccess {
    /// The access configured, in Kubernetes mode.
    pub fn of(settings: &KubeSettings) -> Option<KubeAccess> {
        Some(KubeAccess {
            access: settings.agent_access.clone()?,
            settings: settings.clone(),
            connected: OnceCell::new(),
        })
    }

    async fn connected(&self) -> Result<&Connected> {
        self.connected
            .get_or_try_init(|| async {
                let config = crate::kube_client::config(&self.settings).await?;
                let namespace = self
                    .access
                    .namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone());
                let server = self
                    .access
                    .server
                    .clone()
                    .unwrap_or_else(|| config.cluster_url.to_string());
                let ca_pem = config.root_cert.as_ref().map(|certificates| {
                    pem::encode_many(
                        &certificates
                            .iter()
                            .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
                            .collect::<Vec<_>>(),
                    )
                });
                let insecure = config.accept_invalid_certs;
                let client = kube::Client::try_from(config)?;
                Ok::<_, Error>(Connected {
                    service_accounts: Api::namespaced(client.clone(), &namespace),
                    secrets: Api::namespaced(client, &namespace),
                    namespace,
                    server,
                    ca_pem,
                    insecure,
                })
            })
            .await
    }

    /// A token of the agent's ServiceAccount for `session`, bound to a Secret made for it and
    /// lasting `lifetime` at most (at least the API server's minimum of ten minutes, unless
    /// [`KubeAccess::revoke`] ends it sooner), in a kubeconfig for the sandbox.
    pub async fn issue(&self, session: &str, lifetime: Duration) -> Result<Issued> {
        let connected = self.connected().await?;
        let binding = self.bind(connected, session).await?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(
                    i64::try_from(lifetime.max(MIN_LIFETIME).as_secs()).unwrap_or(i64::MAX),
                ),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: Some(binding.name.clone()),
                    uid: Some(binding.uid.clone()),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let minted = connected
            .service_accounts
            .create_token_request(
                &self.access.service_account,
                &PostParams::default(),
                &request,
            )
            .await;
        let token = match minted {
            Ok(minted) => minted.status.and_then(|status| status.token),
            Err(error) => {
                self.revoke(&binding).await;
                return Err(error.into());
            }
        };
        let Some(token) = token.filter(|token| !token.is_empty()) else {
            self.revoke(&binding).await;
            return Err(Error::KubeConfig(format!(
                "the API server gave no token for the ServiceAccount {}/{}",
                connected.namespace, self.access.service_account
            )));
        };
        Ok(Issued {
            kubeconfig: kubeconfig(
                &connected.server,
                connected.ca_pem.as_deref(),
                connected.insecure,
                &connected.namespace,
                &self.access.service_account,
                &token,
            ),
            token,
            binding,
        })
    }

    /// Makes the session's empty token-binding Secret. One left by an earlier run of the session
    /// (the controller stopped before deleting it) is replaced: its token dies with it.
    async fn bind(&self, connected: &Connected, session: &str) -> Result<TokenBinding> {
        let name = binding_name(session);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [
                        (
                            "app.kubernetes.io/managed-by".to_string(),
                            "opslab".to_string(),
                        ),
                        (SESSION_LABEL.to_string(), session.to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        let created = match connected
            .secrets
            .create(&PostParams::default(), &secret)
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 => {
                connected
                    .secrets
                    .delete(&name, &DeleteParams::default())
                    .await?;
                connected
                    .secrets
                    .create(&PostParams::default(), &secret)
                    .await?
            }
            created => created?,
        };
        let uid = created.metadata.uid.ok_or_else(|| {
            Error::KubeConfig(format!("the API server gave the Secret {name} no uid"))
        })?;
        Ok(TokenBinding { name, uid })
    }

    /// Ends a session's token: deletes the Secret it is bound to (that very Secret, by uid), after
    /// which the API server refuses the token. Gone already is done.
    async fn try_revoke(&self, binding: &TokenBinding) -> Result<()> {
        let connected = self.connected().await?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(binding.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match connected.secrets.delete(&binding.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                debug!(secret = %binding.name, "the token's Secret was already gone");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// [`KubeAccess::try_revoke`], logging a failure.
    pub async fn revoke(&self, binding: &TokenBinding) {
        if let Err(error) = self.try_revoke(binding).await {
            tracing::warn!(%error, secret = %binding.name, "could not delete the Secret the agent's token is bound to: the token lasts until it expires");
        }
    }
}

/// A kubeconfig (JSON, which kubectl reads as YAML) for one server and one token.
fn kubeconfig(
    server: &str,
    ca_pem: Option<&str>,
    insecure: bool,
    namespace: &str,
    user: &str,
    token: &str,
) -> String {
    use base64::Engine;
    let mut cluster = json!({"server": server});
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    if insecure {
        cluster["insecure-skip-tls-verify"] = true.into();
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "opslab", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "opslab", "context":
            {"cluster": "opslab", "user": user, "namespace": namespace}}],
        "current-context": "opslab",
    });
    serde_json::to_string_pretty(&config).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_the_server_its_ca_and_the_token() {
        let text = kubeconfig(
            "https://10.0.0.1:443",
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            false,
            "ops",
            "opslab-agent",
            "tok",
        );
        let parsed: kube::config::Kubeconfig = serde_json::from_str(&text).unwrap();
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:443"));
        assert!(cluster.certificate_authority_data.is_some());
        assert_eq!(cluster.insecure_skip_tls_verify, None);
        let context = parsed.contexts[0].context.as_ref().unwrap();
        assert_eq!(context.namespace.as_deref(), Some("ops"));
        assert_eq!(parsed.current_context.as_deref(), Some("opslab"));
    }
}
