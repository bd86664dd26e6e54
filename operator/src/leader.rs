//! Leader election on a `coordination.k8s.io/v1` Lease, in the manner of client-go's
//! leaderelection: optimistic concurrency on the Lease's resourceVersion, and expiry judged by
//! the local clock from when this process last saw the record change (no clock-skew trust).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::{Error, Result};

/// Timing of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a leader's claim is valid without renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// Interval between attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One participant.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// (holder, renewTime) of the last record seen, and when it was first seen.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

/// Outcome of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Leading,
    Following,
}

impl LeaderElector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Tries once to acquire or renew the lease.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt> {
        let existing = self.api.get_opt(&self.cfg.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(Self::now()),
                    renew_time: Some(Self::now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following),
                Err(e) => Err(e.into()),
            };
        };

        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (holder.clone(), spec.renew_time.clone());
        let changed = match &self.observed {
            Some((h, r, _)) => (h, r) != (&record.0, &record.1),
            None => true,
        };
        if changed {
            self.observed = Some((record.0, record.1, Instant::now()));
        }
        let seen_at = self
            .observed
            .as_ref()
            .map(|o| o.2)
            .unwrap_or_else(Instant::now);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.lease_duration);
        let i_hold = holder.as_deref() == Some(self.cfg.identity.as_str());
        let expired = holder.is_none() || seen_at.elapsed() > duration;
        if !i_hold && !expired {
            return Ok(Attempt::Following);
        }

        let mut new_spec = spec.clone();
        if !i_hold {
            new_spec.acquire_time = Some(Self::now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.holder_identity = Some(self.cfg.identity.clone());
        new_spec.lease_duration_seconds = Some(self.duration_secs());
        new_spec.renew_time = Some(Self::now());
        lease.spec = Some(new_spec);
        // replace() carries metadata.resourceVersion: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                let s = l.spec.unwrap_or_default();
                self.observed = Some((s.holder_identity, s.renew_time, Instant::now()));
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up (so a standby takes over at once) if this process holds it.
    pub async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(Self::now());
        lease.spec = Some(spec);
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
            .map_err(Error::from)
    }

    /// Blocks until this process leads.
    pub async fn acquire(&mut self) -> Result<()> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => return Ok(()),
                Ok(Attempt::Following) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.cfg.name, "lease attempt failed")
                }
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Keeps renewing while leading. Returns (with an error) when leadership is lost: the
    /// caller must then stop acting at once. Ends with `Ok` when `stop` flips to true.
    pub async fn keep_renewing(&mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let mut last_renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return Ok(());
            }
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => last_renewed = Instant::now(),
                Ok(Attempt::Following) => {
                    return Err(Error::Lease(format!(
                        "lease {} was taken by another holder",
                        self.cfg.name
                    )))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    if last_renewed.elapsed() > self.cfg.renew_deadline {
                        return Err(Error::Lease(format!(
                            "could not renew lease {} within {:?}",
                            self.cfg.name, self.cfg.renew_deadline
                        )));
                    }
                }
            }
        }
    }
}
