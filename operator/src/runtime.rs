//! `ferry controller`: waits to be the leader, then runs the reconcilers with their caches
//! until SIGTERM, or until the Lease is lost.

use std::sync::Arc;

use ferry_api::{BucketSync, MigrationJob, Phase, APPROVE_DELETES_ANNOTATION};
use ferry_k8s::names::{JOB_LABEL, SYNC_LABEL};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ApiResource;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use crate::admission::Admission;
use crate::context::{Context, ControllerArgs, Error, MANAGER};
use crate::lenient::{self, Undecodable};
use crate::metrics::{instrumented, Metrics, Stores, CONTROLLERS};
use crate::{bucketsync, migrationjob};

/// Runs the controller until SIGTERM, once this replica holds the leader Lease.
pub async fn run(args: ControllerArgs) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = args.http_addr {
        crate::http::serve(addr, metrics.clone()).await?;
    }
    // Ready once it has a client: a standby is ready too (it serves its probes and takes over
    // the Lease when the leader goes).
    metrics.set_ready();
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| MANAGER.into()));
    let lease = crate::leader::Lease::new(client.clone(), &args.leader_lease, &identity);
    lease.acquire().await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => Error::LeaseNamespace(args.leader_lease.clone()),
        e => e.into(),
    })?;
    let renewing = tokio::spawn(lease.clone().keep());

    let (configmaps, cm_events) = children::<ConfigMap>(&client);
    // The planner's and agents' Jobs: cached for the metrics (agent pod failures).
    let (children, job_events) = children::<Job>(&client);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: Some(identity),
        },
    );
    // Each resource is decoded on its own: one that cannot be is told so and left out, and
    // every other goes on (a typed list would fail whole).
    let mjs = Undecodable::new(
        client.clone(),
        recorder.clone(),
        ApiResource::erase::<MigrationJob>(&()),
    );
    let syncs_bad = Undecodable::new(
        client.clone(),
        recorder.clone(),
        ApiResource::erase::<BucketSync>(&()),
    );
    let ctx = Arc::new(Context {
        recorder,
        client: client.clone(),
        admission: seeded_admission(&mjs).await?,
        args,
        configmaps,
        runs: mjs.clone(),
    });
    let (mj_store, mj_writer) = reflector::store::<MigrationJob>();
    let mj_stream = mjs
        .watch::<MigrationJob>(watcher::Config::default())
        .reflect(mj_writer)
        .applied_objects();
    let (bs_store, bs_writer) = reflector::store::<BucketSync>();
    metrics.set_leader(Some(Stores {
        jobs: mj_store.clone(),
        syncs: bs_store.clone(),
        children,
    }));
    let controller = Controller::for_stream(mj_stream, mj_store)
        .owns_stream(job_events)
        .owns_stream(cm_events)
        // A BucketSync's approval annotation names the run it approves: wake that run.
        .watches_stream(
            lenient::touched(syncs_bad.watch::<BucketSync>(watcher::Config::default())),
            |bs| {
                bs.annotations()
                    .get(APPROVE_DELETES_ANNOTATION)
                    .map(|run| ObjectRef::new(run).within(&bs.namespace().unwrap_or_default()))
            },
        )
        .shutdown_on_signal()
        .run(
            instrumented(&metrics, CONTROLLERS[0], migrationjob::reconcile),
            migrationjob::error_policy,
            ctx.clone(),
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::warn!(error = %e, "reconcile failed");
            }
        });
    let bs_stream = syncs_bad
        .watch::<BucketSync>(watcher::Config::default())
        .reflect(bs_writer)
        .applied_objects();
    let syncs = Controller::for_stream(bs_stream, bs_store)
        .owns_stream(lenient::touched(mjs.watch::<MigrationJob>(
            watcher::Config::default().labels(SYNC_LABEL),
        )))
        .shutdown_on_signal()
        .run(
            instrumented(&metrics, CONTROLLERS[1], bucketsync::reconcile),
            bucketsync::error_policy,
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::warn!(error = %e, "reconcile failed");
            }
        });
    tokio::select! {
        _ = futures::future::join(controller, syncs) => {}
        r = renewing => {
            tracing::error!(?r, "lost the leader Lease; stopping");
            return Err(Error::LostLease);
        }
    }
    lease.release().await;
    Ok(())
}

/// A cache of the `K`s the operator made for its jobs (label `ferry.dev/migrationjob`), and
/// the stream of those that change, which wakes their MigrationJob (`owns_stream`).
fn children<K>(
    client: &Client,
) -> (
    reflector::Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let events = watcher(
        Api::<K>::all(client.clone()),
        watcher::Config::default().labels(JOB_LABEL),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    (store, events)
}

/// The admission index as the cluster is: every MigrationJob running now holds a slot.
async fn seeded_admission(mjs: &Undecodable) -> Result<Admission, Error> {
    let admission = Admission::default();
    let all: Vec<MigrationJob> = mjs.list(None, &Default::default()).await?;
    for mj in all {
        let running = mj
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_active);
        let key = (mj.namespace().unwrap_or_default(), mj.name_any());
        admission.record(&key, running);
    }
    Ok(admission)
}
