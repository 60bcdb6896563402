//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas never act
//! at once: a replica acts only while it holds an unexpired Lease, renews it every few
//! seconds, and stops when a renewal fails. Writes carry the resourceVersion they read, so
//! two replicas racing for an expired Lease cannot both win (the loser gets 409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease as K8sLease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

const DURATION_SECS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Lease {
    api: Api<K8sLease>,
    name: String,
    identity: String,
}

/// Whether a Lease held by `holder`, renewed at `renewed`, may be taken by `me` at `now`.
pub fn may_take(
    holder: Option<&str>,
    renewed: Option<Timestamp>,
    duration_secs: i32,
    me: &str,
    now: Timestamp,
) -> bool {
    match holder {
        None | Some("") => true,
        Some(h) if h == me => true,
        Some(_) => renewed.is_none_or(|r| r.as_second() + (duration_secs as i64) < now.as_second()),
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
                let renewed = spec.renew_time.as_ref().map(|t| t.0);
                if !may_take(
                    holder,
                    renewed,
                    spec.lease_duration_seconds.unwrap_or(DURATION_SECS),
                    &self.identity,
                    Timestamp::now(),
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

    /// Renews the Lease until a renewal fails; returns then (the caller must stop acting).
    pub async fn keep(self) {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_acquire().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the leader Lease");
                    return;
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

    #[test]
    fn a_live_lease_of_another_replica_is_not_taken() {
        let now = Timestamp::from_second(1_000).unwrap();
        let fresh = Some(Timestamp::from_second(990).unwrap());
        let stale = Some(Timestamp::from_second(980).unwrap());
        assert!(!may_take(Some("b"), fresh, 15, "a", now));
        assert!(may_take(Some("b"), stale, 15, "a", now));
        assert!(may_take(Some("a"), fresh, 15, "a", now));
        assert!(may_take(None, fresh, 15, "a", now));
    }
}
