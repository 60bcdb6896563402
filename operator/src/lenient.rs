//! Watching and listing Ferry's resources one object at a time. A typed list fails whole when
//! one item cannot be decoded (a value the schema let through but the Rust types cannot hold,
//! or an object stored before a schema bound existed), which would stop every tenant's jobs.
//! Here each object is decoded on its own: one that cannot be is left out, told so in its
//! status and by an Event, and every other goes on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

/// The longest decoding error kept in a status (it may quote the offending value).
const MAX_ERROR_CHARS: usize = 400;

/// Decodes `obj` as `K`, or says why it cannot be.
pub fn decode<K: DeserializeOwned>(obj: DynamicObject) -> Result<K, String> {
    let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| {
        let e = e.to_string();
        if e.chars().count() > MAX_ERROR_CHARS {
            e.chars().take(MAX_ERROR_CHARS).collect::<String>() + "…"
        } else {
            e
        }
    })
}

/// Tells the owners of undecodable objects, once per object version: a `Failed` status
/// with the reason and a Warning Event. Everything else is never blocked by it.
#[derive(Clone)]
pub struct Undecodable {
    client: Client,
    recorder: Recorder,
    resource: ApiResource,
    told: Arc<Mutex<BTreeMap<(String, String), String>>>,
}

impl Undecodable {
    pub fn new(client: Client, recorder: Recorder, resource: ApiResource) -> Self {
        Undecodable {
            client,
            recorder,
            resource,
            told: Default::default(),
        }
    }

    /// Reports `obj` (decoding failed with `error`), unless this version was reported.
    pub fn report(&self, obj: &DynamicObject, error: &str) {
        let key = (obj.namespace().unwrap_or_default(), obj.name_any());
        let version = obj.resource_version().unwrap_or_default();
        {
            let mut told = self.told.lock().unwrap();
            if told.get(&key) == Some(&version) {
                return;
            }
            told.insert(key.clone(), version);
        }
        tracing::warn!(namespace = %key.0, name = %key.1, kind = %self.resource.kind, %error, "cannot decode a resource; leaving it out");
        let this = self.clone();
        let obj_ref = obj.object_ref(&self.resource);
        let message = format!(
            "the operator cannot read this {}: {error}; fix the spec (other resources are not affected)",
            self.resource.kind
        );
        tokio::spawn(async move {
            let api: Api<DynamicObject> =
                Api::namespaced_with(this.client.clone(), &key.0, &this.resource);
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let status = json!({"status": {
                "phase": "Failed",
                "message": message,
                "conditions": [{
                    "type": "Ready", "status": "False", "reason": "InvalidSpec",
                    "message": message, "lastTransitionTime": now,
                }],
            }});
            if let Err(e) = api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                tracing::warn!(error = %e, "cannot write the status of an undecodable resource");
            }
            let ev = Event {
                type_: EventType::Warning,
                reason: "InvalidSpec".into(),
                note: Some(message.chars().take(1000).collect()),
                action: "Decode".into(),
                secondary: None,
            };
            if let Err(e) = this.recorder.publish(&ev, &obj_ref).await {
                tracing::warn!(error = %e, "could not publish an Event");
            }
        });
    }

    fn typed<K: DeserializeOwned>(&self, obj: DynamicObject) -> Option<K> {
        match decode(obj.clone()) {
            Ok(k) => Some(k),
            Err(e) => {
                self.report(&obj, &e);
                None
            }
        }
    }

    /// The watch events of `K` objects (selected by `config`), each object decoded on its own.
    pub fn watch<K>(
        &self,
        config: watcher::Config,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
    where
        K: Resource + DeserializeOwned + Clone + Send + 'static,
    {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &self.resource);
        let this = self.clone();
        watcher(api, config)
            .default_backoff()
            .try_filter_map(move |ev| {
                let typed = match ev {
                    watcher::Event::Apply(o) => this.typed(o).map(watcher::Event::Apply),
                    watcher::Event::InitApply(o) => this.typed(o).map(watcher::Event::InitApply),
                    watcher::Event::Delete(o) => decode(o).ok().map(watcher::Event::Delete),
                    watcher::Event::Init => Some(watcher::Event::Init),
                    watcher::Event::InitDone => Some(watcher::Event::InitDone),
                };
                futures::future::ready(Ok(typed))
            })
    }

    /// Lists `K` objects of `namespace` (every namespace when None), leaving out (and
    /// reporting) those that cannot be decoded.
    pub async fn list<K>(
        &self,
        namespace: Option<&str>,
        lp: &ListParams,
    ) -> Result<Vec<K>, kube::Error>
    where
        K: DeserializeOwned,
    {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.resource),
            None => Api::all_with(self.client.clone(), &self.resource),
        };
        let list = api.list(lp).await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| self.typed(o))
            .collect())
    }
}

/// The objects a watch stream touches (for the controller's `owns_stream`/`watches_stream`).
pub fn touched<K: Resource + Clone + Send + 'static>(
    s: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K::DynamicType: Default,
{
    s.touched_objects().boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MigrationJob whose quantity does not fit in u64 is undecodable on its own, with a
    /// reason, while a good one beside it decodes.
    #[test]
    fn one_bad_object_is_left_out_with_its_reason() {
        let good: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob",
            "metadata": {"name": "good", "namespace": "a"},
            "spec": {"source": {"s3": {"bucket": "src"}}, "destination": {"s3": {"bucket": "dst"}}}
        }))
        .unwrap();
        let mut bad = good.clone();
        bad.metadata.name = Some("poison".into());
        bad.data["spec"]["bandwidthLimit"] = json!("99999999999999999999");
        let ok: Result<ferry_api::MigrationJob, _> = decode(good);
        assert!(ok.is_ok(), "{ok:?}");
        let err = decode::<ferry_api::MigrationJob>(bad).unwrap_err();
        assert!(!err.is_empty());
        let mut huge = DynamicObject::new("x", &ApiResource::erase::<ferry_api::MigrationJob>(&()));
        huge.data = json!({"spec": {"source": "x".repeat(10_000)}});
        let err = decode::<ferry_api::MigrationJob>(huge).unwrap_err();
        assert!(err.chars().count() <= MAX_ERROR_CHARS + 1);
    }
}
