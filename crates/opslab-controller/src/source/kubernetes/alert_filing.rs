//! Where the alert intake files Incidents in Kubernetes mode: objects created and merge-patched
//! through the API, the group found by its label.

use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use crate::alerts::GROUP_LABEL;
use crate::alerts::decide::{Change, NewIncident};
use crate::alerts::filing::{self, FilingError, Found, Target};
use crate::incident::Incident;

/// The API server, as the intake's target.
#[derive(Clone)]
pub struct ApiTarget {
    client: kube::Client,
}

impl ApiTarget {
    pub fn new(client: kube::Client) -> ApiTarget {
        ApiTarget { client }
    }
}

impl std::fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("kube")
    }
}

/// The API's answer when it refused or could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("the Kubernetes API: {0}")]
struct ApiError(kube::Error);

fn api_error(error: kube::Error) -> FilingError {
    FilingError::Target(Box::new(ApiError(error)))
}

impl Target for ApiTarget {
    /// A patch needs only the key, which the decision names.
    type Handle = ();

    async fn group(&self, namespace: &str, hash: &str) -> Result<Vec<Found<()>>, FilingError> {
        let api: Api<Incident> = Api::namespaced(self.client.clone(), namespace);
        let list = api
            .list(&ListParams::default().labels(&format!("{GROUP_LABEL}={hash}")))
            .await
            .map_err(api_error)?;
        Ok(list
            .items
            .iter()
            .filter_map(|incident| {
                Some(Found {
                    filed: filing::filed_of(incident)?,
                    handle: (),
                })
            })
            .collect())
    }

    async fn create(&self, new: &NewIncident) -> Result<(), FilingError> {
        let api: Api<Incident> = Api::namespaced(self.client.clone(), &new.key.namespace);
        api.create(&PostParams::default(), &filing::new_incident(new))
            .await
            .map_err(api_error)?;
        Ok(())
    }

    async fn update(&self, _: &Found<()>, change: &Change) -> Result<(), FilingError> {
        let api: Api<Incident> = Api::namespaced(self.client.clone(), &change.key.namespace);
        let mut patch = serde_json::json!({
            "metadata": {"annotations": change.annotations},
        });
        if let Some(spec) = &change.spec {
            patch["spec"] = serde_json::to_value(spec)
                .map_err(|error| FilingError::Encode(error.to_string()))?;
        }
        api.patch(
            &change.key.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(api_error)?;
        Ok(())
    }
}
