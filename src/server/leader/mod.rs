//! Leader election, so that several servers may share one etcd: the scheduler and the
//! controllers run in exactly one of them at a time, as kube-scheduler and
//! kube-controller-manager do, each by a Lease in `kube-system` (`kube-scheduler`,
//! `kube-controller-manager`) that the leader renews through the API.
//!
//! What a leader runs lives on a tokio runtime of its own, started when the lease is won and
//! shut down when it is lost, so that every task the scheduler or a controller spawned stops
//! with it while this server goes on serving the API. (kube-controller-manager exits
//! instead; a server that answers clients should not.)
//!
//! Timing, as client-go's: a candidate tries every `retry` period; a leader that could not
//! renew for `renew_deadline` stops, before any candidate may take the lease (it must see
//! the record unchanged for the whole `lease` duration by its own clock, and tries again the
//! moment it runs out). A leader killed outright is replaced within `lease` plus one
//! `retry` period (with client-go's jitter, 1.2 of it) of its last renewal; one that stops
//! normally gives the lease up and is replaced within one `retry` period.

pub mod lease;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use lease::Observed;

/// The namespace of the leader Leases, as kube's.
pub const NAMESPACE: &str = "kube-system";

#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a candidate waits on a holder's record that stopped changing.
    pub lease: Duration,
    /// How long a leader goes on trying to renew before it stops leading.
    pub renew_deadline: Duration,
    /// The wait between two tries.
    pub retry: Duration,
}

impl Default for Settings {
    /// Shorter than kube's 15 s / 10 s / 2 s, so that a killed leader is replaced within
    /// 15 s (the 10 s lease and at most 2.4 s before a candidate saw its last renewal).
    fn default() -> Self {
        Settings {
            lease: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            retry: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "--leader-elect-renew-deadline ({renew:?}) must be shorter than --leader-elect-lease-duration ({lease:?}) and longer than --leader-elect-retry-period ({retry:?})"
    )]
    Order { lease: Duration, renew: Duration, retry: Duration },
}

impl Settings {
    /// client-go's checks: a leader must give up before its lease could be taken.
    pub fn check(&self) -> Result<(), SettingsError> {
        if self.renew_deadline >= self.lease || self.renew_deadline <= self.retry || self.retry.is_zero() {
            return Err(SettingsError::Order { lease: self.lease, renew: self.renew_deadline, retry: self.retry });
        }
        Ok(())
    }
}

/// This process's name in the Leases: the host's name and a random part, new at every
/// start (client-go's `hostname_uuid`), so that a restarted server never mistakes its
/// predecessor's lease for its own.
pub fn identity() -> String {
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Work that runs while a lease is held: spawns its tasks on the current runtime.
pub type Work = Box<dyn Fn() + Send + Sync>;

/// Runs for one Lease: wins it, runs `work` on a runtime of its own while it holds it, and
/// gives it up when `stop` turns true.
pub async fn run(
    client: kube::Client,
    name: &'static str,
    identity: String,
    settings: Settings,
    work: Work,
    mut stop: watch::Receiver<bool>,
) {
    let mut elector = Elector { api: Api::namespaced(client, NAMESPACE), name, identity, settings, seen: None };
    loop {
        // Candidate: try until the lease is ours.
        loop {
            if *stop.borrow() {
                return;
            }
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => tracing::debug!(lease = name, %err, "could not read or write the leader lease"),
            }
            // Try again after a period, or just after the holder's lease runs out if that is
            // sooner: a killed leader is replaced one observation lag after its lease.
            let mut wait = jittered(elector.settings.retry);
            if let Some(left) = elector.seen.as_ref().and_then(|s| s.expires_in(Instant::now(), elector.settings.lease))
            {
                wait = wait.min(left + Duration::from_millis(10));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!(lease = name, identity = %elector.identity, "became the leader");
        let leading = match Leading::start(name, &work) {
            Ok(l) => l,
            Err(err) => {
                // Without threads nothing can run here: let another server lead.
                tracing::error!(lease = name, %err, "cannot start what the leader runs; giving the lease up");
                elector.release().await;
                tokio::time::sleep(elector.settings.lease).await;
                continue;
            }
        };
        // Leader: renew until a renewal is overdue or another holder shows.
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(elector.settings.retry) => {}
                _ = stop.changed() => {
                    drop(leading);
                    elector.release().await;
                    return;
                }
            }
            let left = elector.settings.renew_deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    let holder = elector.seen.as_ref().map(|s| s.holder().to_string()).unwrap_or_default();
                    tracing::warn!(lease = name, %holder, "another server holds the lease; no longer the leader");
                    break;
                }
                Ok(Err(err)) => tracing::warn!(lease = name, %err, "could not renew the leader lease"),
                Err(_) => tracing::warn!(lease = name, "renewing the leader lease timed out"),
            }
            if renewed.elapsed() >= elector.settings.renew_deadline {
                tracing::warn!(lease = name, "the leader lease was not renewed in time; no longer the leader");
                break;
            }
        }
        drop(leading);
    }
}

struct Elector {
    api: Api<Lease>,
    name: &'static str,
    identity: String,
    settings: Settings,
    seen: Option<Observed>,
}

impl Elector {
    /// One try: creates the lease, takes it over or renews it. `Ok(false)`: another holder's
    /// lease is valid, or another candidate wrote first.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let Some(current) = self.api.get_opt(self.name).await? else {
            let spec = lease::first(&self.identity, self.settings.lease, wall);
            let new = Lease {
                metadata: ObjectMeta { name: Some(self.name.into()), ..ObjectMeta::default() },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &new).await {
                Ok(_) => {
                    self.seen = Some(Observed { spec, at: now });
                    Ok(true)
                }
                Err(kube::Error::Api(r)) if r.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let seen = Observed::update(self.seen.take(), current.spec.clone().unwrap_or_default(), now);
        let claim = lease::claim(&seen, &self.identity, self.settings.lease, now, wall);
        self.seen = Some(seen);
        let Some(spec) = claim else { return Ok(false) };
        // The resourceVersion read makes the write conditional: of two candidates, one wins.
        let new = Lease { spec: Some(spec.clone()), ..current };
        match self.api.replace(self.name, &PostParams::default(), &new).await {
            Ok(_) => {
                self.seen = Some(Observed { spec, at: now });
                Ok(true)
            }
            Err(kube::Error::Api(r)) if r.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if it is still ours, so that a candidate need not wait it out.
    async fn release(&mut self) {
        let release = async {
            let current = self.api.get(self.name).await?;
            let spec = current.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            let new = Lease { spec: Some(lease::released(&spec, chrono::Utc::now())), ..current };
            self.api.replace(self.name, &PostParams::default(), &new).await.map(|_| ())
        };
        match tokio::time::timeout(self.settings.retry, release).await {
            Ok(Ok(())) => tracing::info!(lease = self.name, "gave the leader lease up"),
            Ok(Err(err)) => tracing::warn!(lease = self.name, %err, "could not give the leader lease up"),
            Err(_) => tracing::warn!(lease = self.name, "giving the leader lease up timed out"),
        }
        self.seen = None;
    }
}

/// client-go's JitterFactor 1.2: candidates that started together do not try together.
fn jittered(d: Duration) -> Duration {
    let frac = f64::from(uuid::Uuid::new_v4().as_u128() as u16) / f64::from(u16::MAX);
    d + d.mul_f64(0.2 * frac)
}

/// The runtime of what a leader runs; dropping it stops every task on it.
struct Leading(Option<tokio::runtime::Runtime>);

impl Leading {
    fn start(name: &str, work: &Work) -> std::io::Result<Leading> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(name).enable_all().build()?;
        {
            let _inside = runtime.enter();
            work();
        }
        Ok(Leading(Some(runtime)))
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        // Shutting down without waiting: this may be an async context, where waiting is not
        // allowed. Tasks stop at their next await; blocking store calls finish on their own.
        if let Some(r) = self.0.take() {
            r.shutdown_background();
        }
    }
}
