//! The service account tokens projected into pods: asked of the API for the pod's
//! ServiceAccount and bound to the pod (so they stop working once the pod is gone), and
//! asked again when the kubelet would: once 80% of a token's life has passed, or a day.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::Api;

/// The longest a projected token is kept before it is asked for again (the kubelet's).
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The life a projection asks for when it names none (the API's default).
const DEFAULT_SECONDS: i64 = 3600;

/// A token the API issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    /// status.expirationTimestamp.
    pub expires: SystemTime,
    /// spec.expirationSeconds of the answer: the life asked for. The API may let a
    /// pod-bound token live longer than that (kube-apiserver's extended tokens); the
    /// kubelet reckons from the two together, and so does this.
    pub life: Duration,
}

impl Issued {
    /// Whether the kubelet would ask for this token again at `now`: within the last 20%
    /// of its life, or a day after it was issued.
    pub fn due(&self, now: SystemTime) -> bool {
        let issued = self.expires.checked_sub(self.life).unwrap_or(SystemTime::UNIX_EPOCH);
        let renew_at = self.expires.checked_sub(self.life / 5).unwrap_or(SystemTime::UNIX_EPOCH);
        now >= issued + MAX_AGE || now >= renew_at
    }
}

/// The tokens each pod has, by pod uid, then by
/// [`volumes::token_key`](crate::node::volumes::token_key).
pub type Cache = Arc<Mutex<HashMap<String, BTreeMap<String, Issued>>>>;

/// The tokens alone, as [`Manifest::tokens`](crate::model::manifest::Manifest::tokens) keeps them.
pub fn strings(issued: &BTreeMap<String, Issued>) -> BTreeMap<String, String> {
    issued.iter().map(|(k, t)| (k.clone(), t.token.clone())).collect()
}

/// A token for each serviceAccountToken projection of the pod: the one in `have` while it
/// is not [due](Issued::due), else a new one from the API. Err: why one could not be had.
pub async fn fetch(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
    have: &BTreeMap<String, Issued>,
) -> Result<BTreeMap<String, Issued>, String> {
    let mut out = BTreeMap::new();
    let Some(spec) = &pod.spec else { return Ok(out) };
    let account = spec.service_account_name.as_deref().filter(|s| !s.is_empty()).unwrap_or("default");
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let now = SystemTime::now();
    for v in spec.volumes.iter().flatten() {
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            let Some(t) = &source.service_account_token else { continue };
            let key = crate::node::volumes::token_key(&v.name, &t.path);
            if let Some(kept) = have.get(&key).filter(|i| !i.due(now)) {
                out.insert(key, kept.clone());
                continue;
            }
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: t.audience.iter().cloned().collect(),
                    expiration_seconds: Some(t.expiration_seconds.unwrap_or(DEFAULT_SECONDS)),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..TokenRequest::default()
            };
            let answer = api
                .create_token_request(account, &kube::api::PostParams::default(), &request)
                .await
                .map_err(|e| format!("requesting a token of service account \"{ns}/{account}\": {e}"))?;
            out.insert(key, issued(&answer, now).map_err(|e| format!("service account \"{ns}/{account}\": {e}"))?);
        }
    }
    Ok(out)
}

/// What an answered TokenRequest gave; `asked`: when it was asked for.
fn issued(answer: &TokenRequest, asked: SystemTime) -> Result<Issued, String> {
    let status = answer.status.as_ref().ok_or("the TokenRequest's answer has no status")?;
    let expires = SystemTime::from(status.expiration_timestamp.0);
    // An answer without the life asked for: reckon it from now (what was asked is at least
    // as long, so the token is renewed no later than it should be).
    let life = match answer.spec.expiration_seconds {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => expires.duration_since(asked).unwrap_or_default(),
    };
    Ok(Issued { token: status.token.clone(), expires, life })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_in: u64, life: u64, now: SystemTime) -> Issued {
        Issued { token: "t".into(), expires: now + Duration::from_secs(expires_in), life: Duration::from_secs(life) }
    }

    #[test]
    fn a_token_is_renewed_in_the_last_fifth_of_its_life_or_after_a_day() {
        let now = SystemTime::now();
        // An hour's token: kept for 48 minutes, then asked for again.
        assert!(!token(3600, 3600, now).due(now));
        assert!(!token(3600 - 47 * 60, 3600, now).due(now));
        assert!(token(3600 - 48 * 60, 3600, now).due(now));
        assert!(token(0, 3600, now).due(now));
        // The shortest the API gives (10 minutes): 8 minutes.
        assert!(!token(121, 600, now).due(now));
        assert!(token(120, 600, now).due(now));
        // A pod-bound token the API extended to a year, asked for with 3607 s: the kubelet
        // reckons its issue time as expiry less 3607 s, so it is kept until then.
        assert!(!token(365 * 24 * 3600, 3607, now).due(now));
        // A week's token: a day at most.
        let week = 7 * 24 * 3600;
        assert!(!token(week - 23 * 3600, week, now).due(now));
        assert!(token(week - 24 * 3600, week, now).due(now));
    }

    #[test]
    fn an_answer_gives_its_expiry_and_the_life_asked_for() {
        let asked = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut answer = TokenRequest::default();
        assert!(issued(&answer, asked).is_err(), "no status");
        answer.status = Some(k8s_openapi::api::authentication::v1::TokenRequestStatus {
            token: "abc".into(),
            expiration_timestamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                chrono::DateTime::<chrono::Utc>::from(asked + Duration::from_secs(900)),
            ),
        });
        let i = issued(&answer, asked).unwrap();
        assert_eq!((i.token.as_str(), i.life), ("abc", Duration::from_secs(900)));
        answer.spec.expiration_seconds = Some(600);
        let i = issued(&answer, asked).unwrap();
        assert_eq!((i.expires, i.life), (asked + Duration::from_secs(900), Duration::from_secs(600)));
    }
}
