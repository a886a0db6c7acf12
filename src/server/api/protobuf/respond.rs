//! Answers in protobuf to the clients that prefer it: content negotiation on the Accept
//! header, and the JSON answers of the object routes (one object, a list, a Status, a
//! watch stream) rewritten as [`super::encode`] writes them. Routes keep producing JSON:
//! one conversion here covers every verb, and whatever has no message (a Table, a kind
//! k8s-pb lacks, a proxied answer) stays JSON.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use super::super::status::ApiError;
use super::encode;

pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// A watch stream's type, as kube-apiserver labels it.
const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// What the Accept header allows.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Accepts {
    /// Protobuf ranks first.
    pub protobuf: bool,
    /// JSON is acceptable at all (what a kind without a message is answered in).
    pub json: bool,
}

/// Ranks the Accept header's media ranges as kube-apiserver's negotiation does (goautoneg):
/// by q, then the more specific first, then in the client's order. client-go's protobuf
/// clients send `application/vnd.kubernetes.protobuf, */*`.
pub fn negotiate(accept: &str) -> Accepts {
    if accept.trim().is_empty() {
        return Accepts { protobuf: false, json: true };
    }
    // (q, specificity, type) of each range; a range asking for another form of the object
    // (`as=Table`, `as=PartialObjectMetadata`) is not a plain protobuf or JSON answer.
    let mut ranges: Vec<(f64, u8, String)> = Vec::new();
    for part in accept.split(',') {
        let mut params = part.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let (mut q, mut other_form) = (1.0f64, false);
        for p in params {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.trim() {
                "q" => q = v.trim().parse().unwrap_or(0.0),
                "as" => other_form = true,
                _ => {}
            }
        }
        if other_form || q <= 0.0 {
            continue;
        }
        let specificity = match media.as_str() {
            "*/*" => 0,
            m if m.ends_with("/*") => 1,
            _ => 2,
        };
        ranges.push((q, specificity, media));
    }
    // A stable sort: equal ranges keep the client's order.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let best = ranges.first().map(|r| r.2.as_str());
    Accepts {
        protobuf: best == Some(PROTOBUF),
        json: ranges.iter().any(|r| matches!(r.2.as_str(), "application/json" | "application/*" | "*/*")),
    }
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().unwrap_or("").trim() == "application/json")
}

fn not_acceptable(what: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "NotAcceptable",
        format!("only application/json is served for {what}, and the request does not accept it"),
    )
    .into_response()
}

/// A JSON answer (one object, a list or a Status) rewritten in protobuf; left JSON if its
/// kind has no message and JSON is acceptable, a 406 if not.
pub async fn unary(resp: Response, accepts: Accepts) -> Response {
    if !is_json(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(format!("reading the answer: {e}")).into_response(),
    };
    let encoded = serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string()).and_then(|v| {
        let api_version = v["apiVersion"].as_str().unwrap_or("");
        let kind = v["kind"].as_str().unwrap_or("");
        if encode::message_for(api_version, kind).is_none() {
            return Ok(None);
        }
        encode::encode(&v).map(Some)
    });
    match encoded {
        Ok(Some(pb)) => {
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(pb))
        }
        Ok(None) if accepts.json => Response::from_parts(parts, Body::from(bytes)),
        Ok(None) => not_acceptable("this kind"),
        Err(e) => {
            // A stored object that does not fit its message: still answered, in JSON.
            tracing::warn!(error = %e, "an answer could not be written in protobuf");
            if accepts.json {
                Response::from_parts(parts, Body::from(bytes))
            } else {
                ApiError::internal(format!("writing the answer in protobuf: {e}")).into_response()
            }
        }
    }
}

/// A watch of `api_version`/`kind` rewritten from newline-delimited JSON events into
/// length-prefixed protobuf WatchEvents; left JSON for a kind without a message.
pub fn watch(resp: Response, accepts: Accepts, api_version: &str, kind: &str) -> Response {
    if !is_json(&resp) || !resp.status().is_success() {
        return resp;
    }
    if encode::message_for(api_version, kind).is_none() {
        return if accepts.json { resp } else { not_acceptable(kind) };
    }
    let (mut parts, body) = resp.into_parts();
    let mut pending: Vec<u8> = Vec::new();
    let frames = body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        pending.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            out.extend(frame(&line).map_err(|e| axum::Error::new(std::io::Error::other(e)))?);
        }
        Ok::<_, axum::Error>(Bytes::from(out))
    });
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF_WATCH));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from_stream(frames))
}

/// One JSON watch event line as a protobuf frame.
fn frame(line: &[u8]) -> Result<Vec<u8>, String> {
    let event: Value = serde_json::from_slice(line).map_err(|e| format!("a watch event is not JSON: {e}"))?;
    let kind = event["type"].as_str().ok_or("a watch event without a type")?;
    encode::watch_frame(kind, &event["object"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_ranking() {
        let pb = |a: &str| negotiate(a).protobuf;
        assert!(pb("application/vnd.kubernetes.protobuf, */*"));
        assert!(pb("application/vnd.kubernetes.protobuf;q=0.9,application/json;q=0.8"));
        assert!(pb("*/*, application/vnd.kubernetes.protobuf"), "the more specific range first");
        assert!(!pb("application/json, application/vnd.kubernetes.protobuf"), "equal: the client's order");
        assert!(!pb("application/json;q=1,application/vnd.kubernetes.protobuf;q=0.5"));
        assert!(!pb(""));
        assert!(!pb("*/*"));
        assert!(!pb("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json"));
        assert!(!negotiate("application/vnd.kubernetes.protobuf").json);
        assert!(negotiate("application/vnd.kubernetes.protobuf, */*").json);
        assert!(!pb("application/vnd.kubernetes.protobuf;q=0, application/json"));
    }
}
