//! The progress store of an agent in a cluster: the ConfigMap the operator pre-created for
//! its shard (`<job>-shard-<i>`, key `progress.json`). The agent may only get, update and
//! patch exactly that object. Writes are made on the version last read or written
//! (optimistic concurrency): a second agent of the same shard (a pod thought dead that is
//! not) never overwrites a newer checkpoint; its write fails instead.

use std::collections::BTreeMap;

use ferry_core::{ProgressStore, ShardProgress};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::names::PROGRESS_KEY;

pub struct ConfigMapProgressStore {
    api: Api<ConfigMap>,
    name: String,
    /// The resourceVersion last read or written by this agent.
    version: std::sync::Mutex<Option<String>>,
}

/// How long one request for the progress record may take.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl ConfigMapProgressStore {
    /// The record in the ConfigMap `name` of `namespace`, through the in-cluster client (or
    /// the kubeconfig outside a cluster). A request to the API gives up after
    /// [`REQUEST_TIMEOUT`] (kube's default is 295 s): a save that hangs through an API outage
    /// fails in time for the agent to exit and be run again, instead of holding it for minutes.
    pub async fn connect(namespace: &str, name: String) -> Result<Self, kube::Error> {
        let mut config = kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?;
        config.read_timeout = Some(REQUEST_TIMEOUT);
        config.write_timeout = Some(REQUEST_TIMEOUT);
        Ok(Self::new(Client::try_from(config)?, namespace, name))
    }

    /// The record in the ConfigMap `name` of `namespace`.
    pub fn new(client: Client, namespace: &str, name: String) -> Self {
        ConfigMapProgressStore {
            api: Api::namespaced(client, namespace),
            name,
            version: Default::default(),
        }
    }
}

impl ProgressStore for ConfigMapProgressStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<ShardProgress>, String>> {
        Box::pin(async move {
            // A passing API error is tried again: reading nothing would mean starting over.
            let mut tries = 0;
            let cm = loop {
                match self.api.get(&self.name).await {
                    Ok(cm) => break cm,
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {
                        return Err(format!("ConfigMap {}: {}", self.name, e.message));
                    }
                    Err(e) if tries < 5 => {
                        tries += 1;
                        tracing::warn!(error = %e, tries, "reading the progress record; trying again");
                        tokio::time::sleep(std::time::Duration::from_millis(500 << tries)).await;
                    }
                    Err(e) => return Err(format!("ConfigMap {}: {e}", self.name)),
                }
            };
            *self.version.lock().unwrap() = cm.metadata.resource_version.clone();
            match cm.data.and_then(|d| d.get(PROGRESS_KEY).cloned()) {
                None => Ok(None),
                Some(j) => serde_json::from_str(&j)
                    .map(Some)
                    .map_err(|e| format!("ConfigMap {}: {e}", self.name)),
            }
        })
    }

    fn save<'a>(&'a self, p: &'a ShardProgress) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let json = serde_json::to_string(p).expect("serializes");
            let version = self.version.lock().unwrap().clone();
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": version},
                "data": BTreeMap::from([(PROGRESS_KEY, json)])
            });
            match self
                .api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(cm) => {
                    *self.version.lock().unwrap() = cm.metadata.resource_version;
                    Ok(())
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Err(format!(
                    "ConfigMap {}: written by another agent of this shard since this one read \
                     it; not overwriting its newer record",
                    self.name
                )),
                Err(e) => Err(format!("ConfigMap {}: {e}", self.name)),
            }
        })
    }
}

/// The progress record in a shard ConfigMap's data, if it holds one that parses.
pub fn record_of(cm: &ConfigMap) -> Option<ShardProgress> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(PROGRESS_KEY))
        .and_then(|j| serde_json::from_str(j).ok())
}
