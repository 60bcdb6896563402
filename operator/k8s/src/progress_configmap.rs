//! The progress store of an agent in a cluster: the ConfigMap the operator pre-created for
//! its shard (`<job>-shard-<i>`, key `progress.json`). The agent may only get, update and
//! patch exactly that object.

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
}

impl ConfigMapProgressStore {
    /// The record in the ConfigMap `name` of `namespace`, through the in-cluster client (or
    /// the kubeconfig outside a cluster).
    pub async fn connect(namespace: &str, name: String) -> Result<Self, kube::Error> {
        Ok(Self::new(Client::try_default().await?, namespace, name))
    }

    /// The record in the ConfigMap `name` of `namespace`.
    pub fn new(client: Client, namespace: &str, name: String) -> Self {
        ConfigMapProgressStore {
            api: Api::namespaced(client, namespace),
            name,
        }
    }
}

impl ProgressStore for ConfigMapProgressStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<ShardProgress>, String>> {
        Box::pin(async move {
            let cm = self
                .api
                .get(&self.name)
                .await
                .map_err(|e| format!("ConfigMap {}: {e}", self.name))?;
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
            let patch = serde_json::json!({ "data": BTreeMap::from([(PROGRESS_KEY, json)]) });
            self.api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| format!("ConfigMap {}: {e}", self.name))
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
