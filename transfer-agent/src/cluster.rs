//! The progress store of an agent in a cluster: the ConfigMap the operator pre-created for
//! its shard (`<job>-shard-<i>`, key `progress.json`). The agent may only get, update and
//! patch exactly that object.

use std::collections::BTreeMap;

use ferry_api::ShardProgress;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::checkpoint::ProgressStore;

pub const PROGRESS_KEY: &str = "progress.json";

pub struct ConfigMapProgressStore {
    api: Api<ConfigMap>,
    name: String,
}

impl ConfigMapProgressStore {
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
