//! ServiceAccount tokens: the TokenRequest subresource (`POST …/serviceaccounts/NAME/token`,
//! `kubectl create token NAME`) answers a JWT, which authenticates as
//! `system:serviceaccount:NS:NAME` in the groups system:serviceaccounts and
//! system:serviceaccounts:NS while it has not expired and the ServiceAccount (the same
//! one: its uid) still exists, as kube-apiserver's bound tokens. A token bound to a pod
//! (`spec.boundObjectRef`, what a node asks for to project into the pod) also ends with
//! that pod; a node may ask only for such tokens, of the pods bound to it and of their own
//! ServiceAccount, as kube's Node authorizer and NodeRestriction allow.
//!
//! Signed with HMAC-SHA256 (HS256) by a key kept in the store under
//! `/registry/nodectl.io/serviceaccountkey`, which no API path reaches, so that every server
//! sharing an etcd accepts the others' tokens. kube-apiserver signs with an RSA or EC key
//! so that others may verify with the public half; here only the server verifies, and a
//! symmetric key needs no new crate.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::status::ApiError;
use crate::server::registry::objects::{Store, blocking, decode};
use crate::server::registry::resources;
use crate::server::store::StoreError;

const KEY_PATH: &str = "/registry/nodectl.io/serviceaccountkey";
/// kube-apiserver's default issuer and audience.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const DEFAULT_SECONDS: i64 = 3600;
/// What the ServiceAccount admission asks for in a pod's projected token. kube-apiserver
/// (--service-account-extend-token-expiration, on by default) makes a pod-bound token of
/// exactly this length last a year, so that clients that never reread the file keep
/// working; so does this server.
const PROJECTED_SECONDS: i64 = 3607;
const EXTENDED_SECONDS: i64 = 365 * 24 * 3600;
/// kube-apiserver refuses shorter ones.
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 1 << 32;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The signing key, created by the first server that needs one.
fn key(store: &Store) -> Result<Vec<u8>, ApiError> {
    let err = |e| ApiError::from_store(e, "serviceaccountkey", "");
    for _ in 0..3 {
        if let Some(kv) = store.get(KEY_PATH).map_err(err)? {
            return hex::decode(&kv.value).map_err(|_| ApiError::internal("the stored service account key is corrupt"));
        }
        match store.create(KEY_PATH, crate::server::pki::random_token().as_bytes()) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(err(e)),
        }
    }
    Err(ApiError::internal("the service account key could not be read"))
}

fn sign(key: &[u8], claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = b64(&hmac(key, signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// The claims of a token signed with `key`, if its signature holds.
fn verify(key: &[u8], token: &str) -> Option<Value> {
    let (signed, signature) = token.rsplit_once('.')?;
    let given = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).ok()?;
    if !constant_time_eq(&given, &hmac(key, signed.as_bytes())) {
        return None;
    }
    let (header, claims) = signed.split_once('.')?;
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    (header.get("alg")? == "HS256").then_some(())?;
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

/// Whether a bearer token looks like a JWT (three dot-separated parts).
pub fn is_jwt(token: &str) -> bool {
    token.matches('.').count() == 2 && !token.starts_with("node:")
}

/// The service account a JWT stands for, (namespace, name); None for a token that is not
/// ours, has expired, or whose ServiceAccount is gone or another.
pub async fn authenticate(store: &Store, token: &str) -> Result<Option<(String, String)>, ApiError> {
    let (store, token) = (store.clone(), token.to_string());
    blocking(move || {
        let Some(claims) = verify(&key(&store)?, &token) else { return Ok(None) };
        let now = crate::model::time::now_secs();
        if claims.get("exp").and_then(Value::as_i64).is_none_or(|exp| exp <= now) {
            return Ok(None);
        }
        let k8s = &claims["kubernetes.io"];
        let (Some(ns), Some(name), Some(uid)) =
            (k8s["namespace"].as_str(), k8s["serviceaccount"]["name"].as_str(), k8s["serviceaccount"]["uid"].as_str())
        else {
            return Ok(None);
        };
        let r = resources::find("", "v1", "serviceaccounts")
            .ok_or_else(|| ApiError::internal("serviceaccounts are not served"))?;
        let Some(kv) = store.get(&r.key(Some(ns), Some(name))).map_err(|e| ApiError::from_store(e, r.plural, name))?
        else {
            return Ok(None);
        };
        let sa = decode(&kv)?;
        if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
            return Ok(None);
        }
        // A pod-bound token: its pod, the same one, must still be there.
        if let Some(pod) = k8s.get("pod") {
            let (Some(pod_name), Some(pod_uid)) = (pod["name"].as_str(), pod["uid"].as_str()) else { return Ok(None) };
            let pods = resources::find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods are not served"))?;
            let stored = store
                .get(&pods.key(Some(ns), Some(pod_name)))
                .map_err(|e| ApiError::from_store(e, pods.plural, pod_name))?;
            let Some(kv) = stored else { return Ok(None) };
            if decode(&kv)?.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod_uid) {
                return Ok(None);
            }
        }
        Ok(Some((ns.to_string(), name.to_string())))
    })
    .await
}

fn forbidden(name: &str, why: String) -> ApiError {
    let mut e = ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "Forbidden",
        format!("serviceaccounts \"{name}\" is forbidden: {why}"),
    );
    e.details = Some(json!({"name": name, "kind": "serviceaccounts"}));
    e
}

/// The pod a TokenRequest binds its token to: (name, uid).
fn bound_pod(req: &Value) -> Result<Option<(String, String)>, ApiError> {
    let Some(r) = req.pointer("/spec/boundObjectRef").filter(|r| !r.is_null()) else { return Ok(None) };
    let field = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
    let invalid =
        |f: &str, m: String| ApiError::invalid("TokenRequest", "", vec![(format!("spec.boundObjectRef.{f}"), m)]);
    match (field("kind").as_str(), field("apiVersion").as_str()) {
        ("Pod", "v1") => {}
        ("Pod", other) => {
            return Err(invalid("apiVersion", format!("Unsupported value: \"{other}\": supported values: \"v1\"")));
        }
        (other, _) => {
            return Err(invalid("kind", format!("Unsupported value: \"{other}\": supported values: \"Pod\"")));
        }
    }
    let name = field("name");
    if name.is_empty() {
        return Err(invalid("name", "Required value".into()));
    }
    Ok(Some((name, field("uid"))))
}

/// `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: 201 and the TokenRequest with
/// its token in the status. `node`: the node asking, if a node is.
pub async fn request(store: &Store, ns: &str, name: &str, body: &[u8], node: Option<&str>) -> Result<Value, ApiError> {
    let mut req: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !req.is_object() || !req.get("spec").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("the body of a TokenRequest must be an object with a spec"));
    }
    let seconds = req.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(DEFAULT_SECONDS);
    if seconds < MIN_SECONDS {
        return Err(ApiError::invalid(
            "TokenRequest",
            name,
            vec![(
                "spec.expirationSeconds".into(),
                format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
            )],
        ));
    }
    let seconds = seconds.min(MAX_SECONDS);
    let pod_ref = bound_pod(&req)?;
    if let Some(node) = node
        && pod_ref.is_none()
    {
        return Err(forbidden(name, format!("node \"{node}\" may only request tokens bound to its pods")));
    }
    let audiences: Vec<String> =
        super::rbac::strings(&req["spec"], "audiences").into_iter().map(String::from).collect();
    let audiences = if audiences.is_empty() { vec![ISSUER.to_string()] } else { audiences };
    let r = resources::find("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not served"))?;
    let (s, key_of, n) = (store.clone(), r.key(Some(ns), Some(name)), name.to_string());
    let pods = resources::find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods are not served"))?;
    let pod_key = pod_ref.as_ref().map(|(p, _)| pods.key(Some(ns), Some(p)));
    let (sa, pod, key) = blocking(move || {
        let sa = s.get(&key_of).map_err(|e| ApiError::from_store(e, r.plural, &n))?;
        let sa = decode(&sa.ok_or_else(|| ApiError::not_found(r.plural, &n))?)?;
        let pod = match pod_key {
            Some(k) => match s.get(&k).map_err(|e| ApiError::from_store(e, pods.plural, ""))? {
                Some(kv) => Some(decode(&kv)?),
                None => None,
            },
            None => None,
        };
        Ok::<_, ApiError>((sa, pod, key(&s)?))
    })
    .await?;
    let mut pod_claim = None;
    if let Some((pod_name, pod_uid)) = &pod_ref {
        let at = |p: &str| pod.as_ref().and_then(|o| o.pointer(p)).and_then(Value::as_str).unwrap_or_default();
        let Some(_) = &pod else { return Err(ApiError::not_found("pods", pod_name)) };
        if !pod_uid.is_empty() && at("/metadata/uid") != pod_uid {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods \"{pod_name}\": the UID in the bound object reference ({pod_uid}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        let account = Some(at("/spec/serviceAccountName")).filter(|a| !a.is_empty()).unwrap_or("default");
        if account != name {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
            )));
        }
        if let Some(node) = node
            && at("/spec/nodeName") != node
        {
            return Err(forbidden(name, "node requested token bound to a pod scheduled on a different node".into()));
        }
        pod_claim = Some(json!({"name": pod_name, "uid": at("/metadata/uid")}));
    }
    let now = crate::model::time::now_secs();
    let expires = if pod_claim.is_some() && seconds == PROJECTED_SECONDS { EXTENDED_SECONDS } else { seconds };
    let mut claims = json!({
        "aud": audiences, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + expires,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": sa.pointer("/metadata/uid").cloned().unwrap_or_default()}},
    });
    if let Some(p) = pod_claim {
        claims["kubernetes.io"]["pod"] = p;
        if expires != seconds {
            claims["kubernetes.io"]["warnafter"] = json!(now + seconds);
        }
    }
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": null});
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(seconds);
    req["status"] = json!({
        "token": sign(&key, &claims),
        "expirationTimestamp": crate::model::time::format_rfc3339(now + expires),
    });
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_is_rfc_4231s() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_token_verifies_with_its_key_only_and_untouched() {
        let claims = json!({"sub": "x", "exp": 1});
        let token = sign(b"key", &claims);
        assert!(is_jwt(&token));
        assert_eq!(verify(b"key", &token), Some(claims));
        assert_eq!(verify(b"other", &token), None);
        let (head, _) = token.split_once('.').unwrap();
        let forged = format!("{head}.{}.{}", b64(br#"{"sub":"admin","exp":1}"#), token.rsplit_once('.').unwrap().1);
        assert_eq!(verify(b"key", &forged), None);
        let none_alg = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(br#"{"sub":"x"}"#));
        assert_eq!(verify(b"key", &none_alg), None);
    }
}
