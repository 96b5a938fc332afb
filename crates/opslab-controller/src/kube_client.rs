//! The Kubernetes client that [`KubeSettings`] describe: the source watches Incidents with it, and
//! sessions mint the agent's tokens with it. Apart from both, so neither depends on the other.

use kube::Client;

use crate::config::KubeSettings;
use crate::{Error, Result};

/// A client for `settings`: the kubeconfig named, or the inferred one.
pub async fn client(settings: &KubeSettings) -> Result<Client> {
    Ok(Client::try_from(config(settings).await?)?)
}

/// The client's configuration for `settings`: the kubeconfig named, or the inferred one. Its
/// requests say who sends them: the API server names the field manager of an update without one
/// (the finalizer helper's patches) after the user agent, else `unknown`.
pub async fn config(settings: &KubeSettings) -> Result<kube::Config> {
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|error| Error::KubeConfig(format!("{}: {error}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|error| Error::KubeConfig(format!("{}: {error}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|error| Error::KubeConfig(error.to_string()))?,
    };
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(concat!("opslab/", env!("CARGO_PKG_VERSION"))),
    ));
    Ok(config)
}
