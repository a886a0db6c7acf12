//! `/metrics` in the Prometheus text format, with kube-apiserver's names and labels:
//! `apiserver_request_total`, `apiserver_request_duration_seconds` (not for WATCH and
//! CONNECT, which last as long as the client wants), `apiserver_longrunning_requests`,
//! `apiserver_storage_objects`, and the process's memory and start time.
//!
//! A request costs a hash of a few `&'static str`s, a read lock on one of [`SHARDS`]
//! shards and some atomic adds; no lock is held across an await. Every label value is one
//! of a fixed set (a subresource or path the server does not know is `other`), so that
//! clients cannot grow the series without bound.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::status::ApiError;
use crate::server::registry::objects::{Store, blocking};
use crate::server::registry::resources::{self, Resource};

/// kube-apiserver's `apiserver_request_duration_seconds` buckets.
const BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0,
    45.0, 60.0,
];

const SHARDS: usize = 16;

/// The subresources the server serves; any other is counted as `other`.
const SUBRESOURCES: &[&str] =
    &["status", "scale", "binding", "eviction", "log", "exec", "attach", "portforward", "proxy", "token", "finalize"];

/// What a request is, as the metrics label it (kube's RequestInfo, cleaned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    pub verb: &'static str,
    pub dry_run: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    /// The subresource, or for a path that is not a resource the path (`/healthz`), as
    /// kube-apiserver labels its non-resource handlers.
    pub subresource: &'static str,
    pub scope: &'static str,
}

impl Labels {
    /// The labels of a request, from its method, path, query and content type.
    pub fn of(method: &Method, path: &str, raw_query: &str, content_type: &str) -> Labels {
        let query = |name: &str| {
            raw_query.split('&').filter_map(|kv| kv.split_once('=').or(Some((kv, "")))).find(|(k, _)| *k == name)
        };
        let dry_run = if query("dryRun").is_some_and(|(_, v)| v == "All") { "All" } else { "" };
        let watch = query("watch").is_some_and(|(_, v)| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let target = match segments.as_slice() {
            ["api", v, rest @ ..] if !rest.is_empty() => super::parse_target("", v, rest, path).ok(),
            ["apis", g, v, rest @ ..] if !rest.is_empty() => super::parse_target(g, v, rest, path).ok(),
            _ => None,
        };
        let Some(t) = target else {
            return Labels {
                verb: method_name(method),
                dry_run,
                group: "",
                version: "",
                resource: "",
                subresource: non_resource_path(&segments),
                scope: "",
            };
        };
        let subresource = match t.subresource.as_deref() {
            None => "",
            Some(s) => SUBRESOURCES.iter().find(|k| **k == s).copied().unwrap_or("other"),
        };
        let connect = matches!(subresource, "exec" | "attach" | "portforward" | "proxy");
        let named = t.name.is_some();
        let verb = match *method {
            _ if connect => "CONNECT",
            Method::GET if !named && watch => "WATCH",
            Method::GET if !named => "LIST",
            Method::DELETE if !named => "DELETECOLLECTION",
            Method::PATCH if content_type.starts_with("application/apply-patch") => "APPLY",
            ref m => method_name(m),
        };
        // kube's CleanScope: one object (or a create, which names one), a namespace, or all.
        let scope = if named || verb == "POST" {
            "resource"
        } else if t.namespace.is_some() {
            "namespace"
        } else {
            "cluster"
        };
        let r: &'static Resource = t.resource;
        Labels { verb, dry_run, group: r.group, version: r.version, resource: r.plural, subresource, scope }
    }

    /// Whether the request lasts as long as the client wants: not timed, but gauged.
    fn long_running(&self) -> bool {
        matches!(self.verb, "WATCH" | "CONNECT")
    }

    fn write(&self, out: &mut String) {
        // Sorted by name, as Prometheus' Go client writes them.
        label(out, "component", "apiserver");
        label(out, "dry_run", self.dry_run);
        label(out, "group", self.group);
        label(out, "resource", self.resource);
        label(out, "scope", self.scope);
        label(out, "subresource", self.subresource);
        label(out, "verb", self.verb);
        label(out, "version", self.version);
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The label of a path that is not a resource: the endpoint's own path, or `other`.
fn non_resource_path(segments: &[&str]) -> &'static str {
    match segments {
        [] => "/",
        ["healthz", ..] => "/healthz",
        ["livez", ..] => "/livez",
        ["readyz", ..] => "/readyz",
        ["version", ..] => "/version",
        ["metrics", ..] => "/metrics",
        ["openapi", "v2", ..] => "/openapi/v2",
        ["openapi", "v3", ..] => "/openapi/v3",
        ["api", ..] => "/api",
        ["apis", ..] => "/apis",
        _ => "other",
    }
}

/// Appends `name="value"` (comma-separated) with the text format's escapes.
fn label(out: &mut String, name: &str, value: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A map from a small label tuple to its series, split in shards so that requests on
/// different series seldom meet on one lock; a series, once made, is only read.
struct Family<K, V> {
    shards: [RwLock<HashMap<K, Arc<V>>>; SHARDS],
    hasher: std::hash::RandomState,
}

impl<K: Hash + Eq + Copy, V: Default> Family<K, V> {
    fn new() -> Self {
        Family { shards: std::array::from_fn(|_| RwLock::new(HashMap::new())), hasher: Default::default() }
    }

    fn get(&self, key: K) -> Arc<V> {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        // A poisoned lock still holds a usable map: counters have no invariant to break.
        if let Some(v) = shard.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return v.clone();
        }
        shard.write().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone()
    }

    /// Every series, sorted by key for a stable output.
    fn snapshot(&self) -> Vec<(K, Arc<V>)>
    where
        K: Ord,
    {
        let mut all: Vec<(K, Arc<V>)> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let t = |l: &Labels| (l.group, l.version, l.resource, l.subresource, l.verb, l.scope, l.dry_run);
        t(self).cmp(&t(other))
    }
}

#[derive(Default)]
struct Counter(AtomicU64);

#[derive(Default)]
struct Gauge(AtomicI64);

/// Counts per bucket (not cumulative; summed when written), the count and the sum in
/// nanoseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The API server's request metrics.
pub struct Metrics {
    requests: Family<(Labels, u16), Counter>,
    durations: Family<Labels, Histogram>,
    long_running: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { requests: Family::new(), durations: Family::new(), long_running: Family::new() }
    }
}

impl Metrics {
    /// Counts the request whose answer is `response`, started at `start`: a short request
    /// is counted now and timed when its body has been sent; a watch is gauged while its
    /// body lasts and counted when it ends, as kube-apiserver counts it.
    pub fn record(self: &Arc<Self>, labels: Labels, start: Instant, response: Response) -> Response {
        let code = response.status().as_u16();
        let ending = if labels.long_running() {
            let gauge = self.long_running.get(labels);
            gauge.0.fetch_add(1, Ordering::Relaxed);
            Ending::LongRunning { gauge, metrics: self.clone(), key: (labels, code) }
        } else {
            self.requests.get((labels, code)).0.fetch_add(1, Ordering::Relaxed);
            Ending::Timed { histogram: self.durations.get(labels), start }
        };
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, Body::new(Metered { inner: body, _ending: ending }))
    }

    /// The text exposition of every series, with `objects` as apiserver_storage_objects.
    fn render(&self, objects: &[(String, i64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for ((l, code), c) in self.requests.snapshot() {
            out.push_str("apiserver_request_total{");
            label(&mut out, "code", &code.to_string());
            l.write(&mut out);
            out.push_str(&format!("}} {}\n", c.0.load(Ordering::Relaxed)));
        }
        out.push_str("# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for (l, h) in self.durations.snapshot() {
            let mut labels = String::from("{");
            l.write(&mut labels);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                out.push_str(&format!(
                    "apiserver_request_duration_seconds_bucket{labels},le=\"{bound}\"}} {cumulative}\n"
                ));
            }
            let count = h.count.load(Ordering::Relaxed);
            out.push_str(&format!("apiserver_request_duration_seconds_bucket{labels},le=\"+Inf\"}} {count}\n"));
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            out.push_str(&format!("apiserver_request_duration_seconds_sum{labels}}} {sum}\n"));
            out.push_str(&format!("apiserver_request_duration_seconds_count{labels}}} {count}\n"));
        }
        out.push_str("# HELP apiserver_longrunning_requests [STABLE] Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component. Not all requests are tracked this way.\n# TYPE apiserver_longrunning_requests gauge\n");
        for (l, g) in self.long_running.snapshot() {
            out.push_str("apiserver_longrunning_requests{");
            l.write(&mut out);
            out.push_str(&format!("}} {}\n", g.0.load(Ordering::Relaxed)));
        }
        out.push_str("# HELP apiserver_storage_objects [STABLE] Number of stored objects at the time of last check split by kind. In case of a fetching error, the value will be -1.\n# TYPE apiserver_storage_objects gauge\n");
        for (resource, n) in objects {
            out.push_str("apiserver_storage_objects{");
            label(&mut out, "resource", resource);
            out.push_str(&format!("}} {n}\n"));
        }
        process(&mut out);
        out
    }
}

/// What happens when a response's body is done (sent, or dropped with its connection).
enum Ending {
    Timed {
        histogram: Arc<Histogram>,
        start: Instant,
    },
    /// The request is counted under `key` once it ends (not before: no series at 0).
    LongRunning {
        gauge: Arc<Gauge>,
        metrics: Arc<Metrics>,
        key: (Labels, u16),
    },
}

impl Drop for Ending {
    fn drop(&mut self) {
        match self {
            Ending::Timed { histogram, start } => histogram.observe(start.elapsed()),
            Ending::LongRunning { gauge, metrics, key } => {
                gauge.0.fetch_sub(1, Ordering::Relaxed);
                metrics.requests.get(*key).0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A response body that ends its request's metrics when it is dropped; its frames and
/// size pass through unchanged.
struct Metered {
    inner: Body,
    _ending: Ending,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// apiserver_storage_objects: live keys per stored resource, counted by the store from
/// their key prefix (no object is read); -1 where the store failed, as kube reports it.
async fn storage_objects(store: &Store) -> Vec<(String, i64)> {
    let store = store.clone();
    let counted = blocking(move || {
        Ok::<_, ApiError>(
            resources::RESOURCES
                .iter()
                .filter(|r| r.is_storage())
                .map(|r| {
                    let name =
                        if r.group.is_empty() { r.plural.to_string() } else { format!("{}.{}", r.plural, r.group) };
                    (name, store.count(&r.key(None, None)).unwrap_or(-1))
                })
                .collect::<Vec<_>>(),
        )
    })
    .await;
    let mut all = counted.unwrap_or_default();
    all.sort();
    all
}

/// process_resident_memory_bytes and process_start_time_seconds, from /proc.
fn process(out: &mut String) {
    if let Some(rss) = resident_bytes() {
        out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\n");
        out.push_str(&format!("process_resident_memory_bytes {rss}\n"));
    }
    if let Some(start) = start_time_seconds() {
        out.push_str("# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\n");
        out.push_str(&format!("process_start_time_seconds {start}\n"));
    }
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |p| p as u64)
}

/// The second field of /proc/self/statm (resident pages), in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The process's start (field 22 of /proc/self/stat, in clock ticks after boot) plus the
/// boot time (`btime` of /proc/stat).
fn start_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|h| *h > 0)? as f64;
    Some(btime as f64 + ticks as f64 / hz)
}

/// `GET /metrics`, once authorized.
pub async fn answer(metrics: &Metrics, store: &Store) -> Response {
    let objects = storage_objects(store).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render(&objects))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_as_kube_apiserver_labels_them() {
        let l = Labels::of(&Method::GET, "/api/v1/namespaces/default/pods", "", "");
        assert_eq!((l.verb, l.resource, l.scope, l.group, l.version), ("LIST", "pods", "namespace", "", "v1"));
        let l = Labels::of(&Method::GET, "/apis/apps/v1/deployments", "watch=true&resourceVersion=1", "");
        assert_eq!((l.verb, l.resource, l.scope, l.group), ("WATCH", "deployments", "cluster", "apps"));
        let l = Labels::of(&Method::POST, "/api/v1/namespaces/default/configmaps", "dryRun=All", "");
        assert_eq!((l.verb, l.scope, l.dry_run), ("POST", "resource", "All"));
        let l = Labels::of(&Method::PATCH, "/apis/apps/v1/namespaces/x/deployments/w/scale", "", "");
        assert_eq!((l.verb, l.subresource, l.scope), ("PATCH", "scale", "resource"));
        let l = Labels::of(&Method::GET, "/api/v1/namespaces/x/pods/p/exec", "", "");
        assert_eq!((l.verb, l.subresource), ("CONNECT", "exec"));
        let l = Labels::of(&Method::GET, "/api/v1/namespaces/x/pods/p/whatever", "", "");
        assert_eq!(l.subresource, "other");
        let l = Labels::of(&Method::DELETE, "/api/v1/namespaces/x/pods", "", "");
        assert_eq!(l.verb, "DELETECOLLECTION");
        let l = Labels::of(&Method::GET, "/readyz/store", "", "");
        assert_eq!((l.verb, l.subresource, l.resource, l.scope), ("GET", "/readyz", "", ""));
        assert_eq!(Labels::of(&Method::GET, "/no/such/thing", "", "").subresource, "other");
    }

    #[test]
    fn a_histogram_is_written_cumulatively_with_kube_buckets() {
        let m = Arc::new(Metrics::default());
        let l = Labels::of(&Method::GET, "/api/v1/namespaces/default/pods/p", "", "");
        let h = m.durations.get(l);
        h.observe(std::time::Duration::from_millis(1));
        h.observe(std::time::Duration::from_millis(300));
        m.requests.get((l, 200)).0.fetch_add(2, Ordering::Relaxed);
        let text = m.render(&[("pods".into(), 3)]);
        let labels = "component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"pods\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\"";
        assert!(text.contains(&format!("apiserver_request_total{{code=\"200\",{labels}}} 2\n")), "{text}");
        assert!(text.contains(&format!("apiserver_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 1\n")));
        assert!(text.contains(&format!("apiserver_request_duration_seconds_bucket{{{labels},le=\"0.2\"}} 1\n")));
        assert!(text.contains(&format!("apiserver_request_duration_seconds_bucket{{{labels},le=\"0.4\"}} 2\n")));
        assert!(text.contains(&format!("apiserver_request_duration_seconds_bucket{{{labels},le=\"60\"}} 2\n")));
        assert!(text.contains(&format!("apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2\n")));
        assert!(text.contains(&format!("apiserver_request_duration_seconds_count{{{labels}}} 2\n")));
        assert!(text.contains("apiserver_storage_objects{resource=\"pods\"} 3\n"));
        assert!(text.contains("process_resident_memory_bytes "));
    }
}
