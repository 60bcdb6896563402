//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas never act
//! at once, the way client-go does it: a replica acts only while it holds the Lease, renews it
//! every few seconds, and stops once it has not renewed it for RENEW_DEADLINE (shorter than
//! the Lease's duration, whatever a renewal request does: one that hangs is given up). A
//! standby takes the Lease only when it has seen the same Lease record, unchanged, for the
//! Lease's whole duration on its own clock: no remote timestamp is compared with a local
//! clock. Writes carry the resourceVersion they read, so two replicas racing for an expired
//! Lease cannot both win (the loser gets 409 Conflict).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease as K8sLease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

const DURATION_SECS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// The leader stops acting when it has not renewed the Lease for this long: before any
/// standby (which waits the whole duration) can take it.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Lease {
    api: Api<K8sLease>,
    name: String,
    identity: String,
    /// The Lease record last seen (its resourceVersion) and when this replica first saw it.
    observed: Arc<Mutex<Option<(String, Instant)>>>,
}

/// Whether a Lease held by `holder` may be taken by `me`, when its record has been seen
/// unchanged for `unchanged_for` on this replica's clock.
pub fn may_take(
    holder: Option<&str>,
    unchanged_for: Duration,
    duration_secs: i32,
    me: &str,
) -> bool {
    match holder {
        None | Some("") => true,
        Some(h) if h == me => true,
        Some(_) => unchanged_for > Duration::from_secs(duration_secs.max(1) as u64),
    }
}

impl Lease {
    /// `lease` is `namespace/name`.
    pub fn new(client: Client, lease: &str, identity: &str) -> Lease {
        let (ns, name) = lease.split_once('/').unwrap_or(("default", lease));
        Lease {
            api: Api::namespaced(client, ns),
            name: name.to_string(),
            identity: identity.to_string(),
            observed: Default::default(),
        }
    }

    fn spec(&self, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(DURATION_SECS),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            ..Default::default()
        }
    }

    /// How long this replica has seen the Lease record at `version` (its own clock).
    fn unchanged_for(&self, version: String) -> Duration {
        let mut observed = self.observed.lock().unwrap();
        match observed.as_ref() {
            Some((v, since)) if *v == version => since.elapsed(),
            _ => {
                *observed = Some((version, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One attempt to take or renew the Lease.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = K8sLease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut current) => {
                let spec = current.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.as_deref();
                let unchanged_for = self.unchanged_for(
                    current
                        .metadata
                        .resource_version
                        .clone()
                        .unwrap_or_default(),
                );
                if !may_take(
                    holder,
                    unchanged_for,
                    spec.lease_duration_seconds.unwrap_or(DURATION_SECS),
                    &self.identity,
                ) {
                    return Ok(false);
                }
                let acquired = if holder == Some(self.identity.as_str()) {
                    spec.acquire_time.clone()
                } else {
                    None
                };
                current.spec = Some(self.spec(acquired));
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &current)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        loop {
            if self.try_acquire().await? {
                tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                return Ok(());
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Renews the Lease; returns (the caller must stop acting) once another replica holds it,
    /// or once it has not been renewed for RENEW_DEADLINE: a renewal that fails is tried again
    /// until then, and one that hangs is given up at the deadline.
    pub async fn keep(self) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            loop {
                let left = RENEW_DEADLINE.saturating_sub(renewed.elapsed());
                if left.is_zero() {
                    tracing::warn!("the leader Lease was not renewed in time; stopping");
                    return;
                }
                match tokio::time::timeout(left, self.try_acquire()).await {
                    Ok(Ok(true)) => {
                        renewed = Instant::now();
                        break;
                    }
                    Ok(Ok(false)) => return,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not renew the leader Lease; trying again");
                        tokio::time::sleep(Duration::from_secs(1).min(left)).await;
                    }
                    Err(_) => {} // hung until the deadline: checked at the top
                }
            }
        }
    }

    /// Gives the Lease up on a clean shutdown so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut l)) = self.api.get_opt(&self.name).await {
            if l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
            {
                if let Some(s) = l.spec.as_mut() {
                    s.holder_identity = None;
                }
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &l)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another replica's Lease is taken only once seen unchanged for its whole duration on
    /// this replica's own clock (no remote timestamp against the local clock).
    #[test]
    fn a_live_lease_of_another_replica_is_not_taken() {
        let s = Duration::from_secs;
        assert!(!may_take(Some("b"), s(10), 15, "a"));
        assert!(!may_take(Some("b"), s(15), 15, "a"));
        assert!(may_take(Some("b"), s(16), 15, "a"));
        assert!(may_take(Some("a"), s(0), 15, "a"));
        assert!(may_take(None, s(0), 15, "a"));
        assert!(
            RENEW_DEADLINE < s(DURATION_SECS as u64),
            "the leader stops first"
        );
    }
}
