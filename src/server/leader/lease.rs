//! The rules of a leader-election Lease, as client-go's leaderelection package keeps them:
//! who may write the record, and what they write.
//!
//! A candidate never trusts another machine's clock: a holder's lease counts as expired
//! only when the record has not changed for its `leaseDurationSeconds` by the candidate's
//! own clock since the candidate last saw it change.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// The last record a candidate read, and when (by its clock) it last changed.
#[derive(Debug, Clone)]
pub struct Observed {
    pub spec: LeaseSpec,
    pub at: Instant,
}

impl Observed {
    /// Notes a record just read at `now`: the time moves only when the record changed.
    pub fn update(seen: Option<Observed>, spec: LeaseSpec, now: Instant) -> Observed {
        match seen {
            Some(o) if o.spec == spec => o,
            _ => Observed { spec, at: now },
        }
    }

    pub fn holder(&self) -> &str {
        self.spec.holder_identity.as_deref().unwrap_or("")
    }

    /// Whether someone holds the lease and it has not run out, by our clock.
    fn valid(&self, now: Instant, fallback: Duration) -> bool {
        self.expires_in(now, fallback).is_some()
    }

    /// How long until the holder's lease runs out by our clock, unless the record changes;
    /// `None` if it has or no one holds it.
    pub fn expires_in(&self, now: Instant, fallback: Duration) -> Option<Duration> {
        let secs = self.spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok());
        let length = secs.map(Duration::from_secs).unwrap_or(fallback);
        let left = (self.at + length).checked_duration_since(now).filter(|d| !d.is_zero())?;
        (!self.holder().is_empty()).then_some(left)
    }
}

/// The record `me` writes to take or keep the lease, or `None` while another holder's lease
/// is valid.
pub fn claim(seen: &Observed, me: &str, lease: Duration, now: Instant, wall: DateTime<Utc>) -> Option<LeaseSpec> {
    let mine = seen.holder() == me;
    if !mine && seen.valid(now, lease) {
        return None;
    }
    let old = &seen.spec;
    let transitions = old.lease_transitions.unwrap_or(0);
    Some(LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(seconds(lease)),
        acquire_time: if mine { old.acquire_time.clone() } else { Some(MicroTime(wall)) },
        renew_time: Some(MicroTime(wall)),
        lease_transitions: Some(if mine { transitions } else { transitions + 1 }),
        ..old.clone()
    })
}

/// The record a new lease starts with.
pub fn first(me: &str, lease: Duration, wall: DateTime<Utc>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(seconds(lease)),
        acquire_time: Some(MicroTime(wall)),
        renew_time: Some(MicroTime(wall)),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    }
}

/// What a leader that stops writes: no holder, so that a candidate takes over at once
/// rather than after the lease runs out (client-go's ReleaseOnCancel).
pub fn released(old: &LeaseSpec, wall: DateTime<Utc>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(wall)),
        renew_time: Some(MicroTime(wall)),
        ..old.clone()
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn held_by(who: &str) -> LeaseSpec {
        first(who, LEASE, Utc::now())
    }

    #[test]
    fn another_holders_lease_is_respected_until_it_stops_changing_for_its_duration() {
        let t0 = Instant::now();
        let seen = Observed::update(None, held_by("a"), t0);
        assert!(claim(&seen, "b", LEASE, t0 + Duration::from_secs(9), Utc::now()).is_none());
        // A renewal moves the observed time; the same record read again does not.
        let renewed =
            LeaseSpec { renew_time: Some(MicroTime(Utc::now() + chrono::Duration::seconds(5))), ..seen.spec.clone() };
        let later = Observed::update(Some(seen.clone()), renewed, t0 + Duration::from_secs(5));
        assert_eq!(later.at, t0 + Duration::from_secs(5));
        let same = Observed::update(Some(later.clone()), later.spec.clone(), t0 + Duration::from_secs(8));
        assert_eq!(same.at, later.at);
        assert!(claim(&same, "b", LEASE, t0 + Duration::from_secs(14), Utc::now()).is_none());
        let taken = claim(&same, "b", LEASE, t0 + Duration::from_secs(16), Utc::now()).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
    }

    #[test]
    fn a_holder_renews_keeping_its_acquire_time_and_a_released_lease_is_free_at_once() {
        let t0 = Instant::now();
        let seen = Observed::update(None, held_by("a"), t0);
        let renewed = claim(&seen, "a", LEASE, t0, Utc::now() + chrono::Duration::seconds(2)).unwrap();
        assert_eq!((renewed.acquire_time, renewed.lease_transitions), (seen.spec.acquire_time.clone(), Some(0)));
        assert_ne!(renewed.renew_time, seen.spec.renew_time);
        let free = Observed::update(Some(seen.clone()), released(&seen.spec, Utc::now()), t0);
        assert!(claim(&free, "b", LEASE, t0, Utc::now()).is_some());
    }
}
