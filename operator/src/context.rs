//! What every reconciler of the controller shares: the client, the Event recorder, the
//! caches, the admission index, the arguments, and the typed errors. Kind-specific state
//! (MigrationJob planning) lives with its kind.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::Client;

use crate::admission::Admission;

/// The field manager of every write, and the Event reporter.
pub const MANAGER: &str = "ferry-controller";
/// The finalizer that stops a job's agents before it goes.
pub const FINALIZER: &str = "ferry.dev/cleanup";

#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// The image the agents' Jobs run (it holds the `transfer-agent` binary).
    #[arg(long, env = "FERRY_AGENT_IMAGE", default_value = concat!("ferry/ferry:", env!("CARGO_PKG_VERSION")))]
    pub agent_image: String,
    /// MigrationJobs running at once; the rest stay Pending (Queued).
    #[arg(long, env = "FERRY_MAX_RUNNING", default_value_t = 10)]
    pub max_running: usize,
    /// MigrationJobs of one namespace running at once (unset: only the cluster's cap), so one
    /// tenant cannot keep everyone else queued.
    #[arg(long, env = "FERRY_MAX_RUNNING_PER_NAMESPACE")]
    pub max_running_per_namespace: Option<usize>,
    /// Lets an S3 side without `credentialsSecretRef` use the pods' own cloud identity in
    /// every namespace (off: only in namespaces labelled `ferry.dev/ambient-credentials=true`).
    #[arg(long, env = "FERRY_ALLOW_AMBIENT_CREDENTIALS", default_value_t = false)]
    pub allow_ambient_credentials: bool,
    /// The longest a planner pod may run (seconds) before it counts as failed.
    #[arg(long, env = "FERRY_PLANNER_DEADLINE_SECONDS", default_value_t = 900)]
    pub planner_deadline_seconds: i64,
    /// Image pull Secrets of the agent and planner pods (comma-separated names, in the job's
    /// namespace).
    #[arg(long, env = "FERRY_AGENT_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub agent_image_pull_secrets: Vec<String>,
    /// Annotations of the agents' ServiceAccounts, as JSON (`{"eks.amazonaws.com/role-arn":
    /// "..."}`): the cloud identity of ambient credentials (IRSA, Workload Identity).
    #[arg(long, env = "FERRY_AGENT_SERVICE_ACCOUNT_ANNOTATIONS", value_parser = parse_annotations)]
    pub agent_service_account_annotations: Option<std::collections::BTreeMap<String, String>>,
    /// Where the planner and agent pods may run, as JSON: `{"nodeSelector": {...},
    /// "tolerations": [...], "affinity": {...}, "priorityClassName": "..."}` (each optional).
    #[arg(long, env = "FERRY_AGENT_SCHEDULING", value_parser = parse_scheduling)]
    pub agent_scheduling: Option<Box<crate::migrationjob::build::Scheduling>>,
    /// The Lease used for leader election, as namespace/name.
    #[arg(
        long,
        env = "FERRY_LEADER_LEASE",
        default_value = "ferry-system/ferry-controller"
    )]
    pub leader_lease: String,
    /// This replica's identity in the Lease (defaults to the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address (e.g. `0.0.0.0:8080`; the
    /// Helm chart sets it). Unset: no HTTP port.
    #[arg(long, env = "FERRY_HTTP_ADDR")]
    pub http_addr: Option<std::net::SocketAddr>,
}

fn parse_scheduling(s: &str) -> Result<Box<crate::migrationjob::build::Scheduling>, String> {
    serde_json::from_str(s).map_err(|e| {
        format!("a JSON object of nodeSelector, tolerations, affinity, priorityClassName: {e}")
    })
}

fn parse_annotations(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    serde_json::from_str(s).map_err(|e| format!("a JSON object of strings: {e}"))
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub args: ControllerArgs,
    /// The ConfigMaps Ferry made for its jobs (plans and shard progress), kept by a watch.
    pub configmaps: Store<ConfigMap>,
    pub admission: Admission,
    /// Lists MigrationJobs one object at a time (a BucketSync's runs), leaving out and
    /// reporting one that cannot be decoded.
    pub runs: crate::lenient::Undecodable,
}

/// What can go wrong in a reconcile or in the controller's runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the ConfigMap cache stopped")]
    CacheGone,
    #[error(
        "the namespace of the leader Lease {0} does not exist: create it (the Helm chart runs the \
         operator in its own namespace) or choose another with --leader-lease NAMESPACE/NAME"
    )]
    LeaseNamespace(String),
    #[error("lost the leader Lease")]
    LostLease,
    #[error("{0}")]
    Http(#[from] crate::http::BindError),
    #[error("the plan of the first run is gone; cannot retry the failed objects")]
    PlanGone,
    /// A child's name is held by an object the job does not own (never adopted).
    #[error("{0}")]
    NameTaken(String),
}

/// Publishes an Event about `obj` (best effort: a failure is logged).
pub async fn publish_event(
    ctx: &Context,
    obj: &k8s_openapi::api::core::v1::ObjectReference,
    warning: bool,
    reason: ferry_api::Reason,
    message: &str,
    action: &str,
) {
    use kube::runtime::events::{Event, EventType};
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.as_str().into(),
        note: Some(message.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, obj).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}
