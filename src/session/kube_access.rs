//! Kubernetes mode: a session's sandbox gets a kubeconfig for a ServiceAccount of the agent's own,
//! with a token minted for the session (TokenRequest) that expires with it. The token is a secret:
//! the store's redactor holds it while the session runs (so it is never stored, logged or sent to
//! the model), and it reaches the sandbox only, through an exec's stdin.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::config::{AgentKubeAccess, KubeSettings};
use crate::{Error, Result};

/// Where kubectl looks by default, as `HOME` is the work folder.
pub const KUBECONFIG_PATH: &str = "/work/.kube/config";
/// The shortest lifetime the API server grants a requested token.
const MIN_LIFETIME: Duration = Duration::from_secs(600);

/// Mints sessions' tokens; connects on first use.
pub struct KubeAccess {
    access: AgentKubeAccess,
    settings: KubeSettings,
    connected: OnceCell<Connected>,
}

struct Connected {
    service_accounts: Api<ServiceAccount>,
    namespace: String,
    server: String,
    /// The API server's CA as PEM; None when the controller trusts the system's roots.
    ca_pem: Option<String>,
    insecure: bool,
}

/// A session's kubeconfig and the token in it.
pub struct Issued {
    pub kubeconfig: String,
    pub token: String,
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
                    service_accounts: Api::namespaced(client, &namespace),
                    namespace,
                    server,
                    ca_pem,
                    insecure,
                })
            })
            .await
    }

    /// A token of the agent's ServiceAccount lasting `lifetime` (at least the API server's
    /// minimum of ten minutes), in a kubeconfig for the sandbox.
    pub async fn issue(&self, lifetime: Duration) -> Result<Issued> {
        let connected = self.connected().await?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(
                    i64::try_from(lifetime.max(MIN_LIFETIME).as_secs()).unwrap_or(i64::MAX),
                ),
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
            .await?;
        let token = minted
            .status
            .and_then(|status| status.token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Error::KubeConfig(format!(
                    "the API server gave no token for the ServiceAccount {}/{}",
                    connected.namespace, self.access.service_account
                ))
            })?;
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
        })
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
