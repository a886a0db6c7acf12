//! `nodectl get pods`, `delete pod`, `logs`, `apply` and `run --detach`: the daemon's local
//! clients, printing as kubectl prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use super::local::{self, SocketArgs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Args)]
pub struct GetArgs {
    /// pods (also pod, po)
    resource: String,
    /// One pod, by name.
    name: Option<String>,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Every namespace.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    #[arg(long, short = 'o', value_enum)]
    output: Option<Output>,
    #[command(flatten)]
    socket: SocketArgs,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// pod (also pods, po)
    resource: String,
    name: String,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Seconds before SIGKILL (the pod's terminationGracePeriodSeconds if not given; 0 kills at once).
    #[arg(long, value_name = "SECONDS")]
    grace_period: Option<i64>,
    /// Wait until the pod is gone (as kubectl does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    #[command(flatten)]
    socket: SocketArgs,
}

#[derive(Args)]
pub struct LogsArgs {
    pod: String,
    #[arg(long, short = 'c')]
    container: Option<String>,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The previous run of the container.
    #[arg(long, short = 'p')]
    previous: bool,
    #[arg(long, value_name = "N")]
    tail: Option<i64>,
    #[arg(long)]
    timestamps: bool,
    /// Go on printing what the container writes, until it ends.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    socket: SocketArgs,
}

#[derive(Args)]
pub struct TopArgs {
    /// pods (also pod, po)
    resource: String,
    /// One pod, by name.
    name: Option<String>,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Every namespace.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// A row per container.
    #[arg(long)]
    containers: bool,
    #[command(flatten)]
    socket: SocketArgs,
}

#[derive(Args)]
pub struct ApplyArgs {
    /// The Pod manifest.
    #[arg(long, short = 'f')]
    pub filename: PathBuf,
    #[command(flatten)]
    pub socket: SocketArgs,
}

fn check_kind(resource: &str) -> Result<()> {
    match resource {
        "pods" | "pod" | "po" => Ok(()),
        other => bail!("the server doesn't have a resource type \"{other}\" (the node daemon serves pods)"),
    }
}

fn say(out: &str) -> Result<i32> {
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(0)
}

fn to_yaml(v: &Value) -> Result<String> {
    serde_yaml_ng::to_string(v).context("YAML")
}

pub fn get(root: &Path, a: GetArgs) -> Result<i32> {
    check_kind(&a.resource)?;
    let socket = a.socket.path(root);
    let value = match &a.name {
        Some(n) => {
            local::call(&socket, "GET", &format!("/api/v1/namespaces/{}/pods/{n}", a.namespace), None)?.json()?
        }
        None => {
            let mut list = local::call(&socket, "GET", "/api/v1/pods", None)?.json()?;
            if !a.all_namespaces
                && let Some(items) = list["items"].as_array_mut()
            {
                items.retain(|p| p["metadata"]["namespace"].as_str() == Some(a.namespace.as_str()));
            }
            list
        }
    };
    let items: Vec<Value> = match &a.name {
        Some(_) => vec![value.clone()],
        None => value["items"].as_array().cloned().unwrap_or_default(),
    };
    match a.output {
        Some(Output::Json) => say(&format!("{}\n", serde_json::to_string_pretty(&value)?)),
        Some(Output::Yaml) => say(&to_yaml(&value)?),
        Some(Output::Name) => say(&items
            .iter()
            .map(|p| format!("pod/{}\n", p["metadata"]["name"].as_str().unwrap_or("")))
            .collect::<String>()),
        o => {
            if items.is_empty() {
                let _ = writeln!(std::io::stderr(), "No resources found in {} namespace.", a.namespace);
                return Ok(0);
            }
            say(&table(
                &items,
                o == Some(Output::Wide),
                a.all_namespaces,
                chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).timestamp(),
            ))
        }
    }
}

/// What kubectl prints in a pod's STATUS column (its printPod).
pub fn pod_status_text(p: &Value) -> String {
    let s = &p["status"];
    let mut reason = s["reason"].as_str().or(s["phase"].as_str()).unwrap_or("Pending").to_string();
    let inits = p["spec"]["initContainers"].as_array().map_or(0, Vec::len);
    let mut initializing = false;
    for (i, c) in s["initContainerStatuses"].as_array().into_iter().flatten().enumerate() {
        let st = &c["state"];
        if let Some(t) = st.get("terminated").filter(|t| t.is_object()) {
            if t["exitCode"].as_i64() == Some(0) {
                continue;
            }
            reason = match t["reason"].as_str() {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => format!("Init:ExitCode:{}", t["exitCode"]),
            };
        } else if let Some(r) = st["waiting"]["reason"].as_str().filter(|r| !r.is_empty() && *r != "PodInitializing") {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{inits}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut running = false;
        for c in s["containerStatuses"].as_array().into_iter().flatten().rev() {
            let st = &c["state"];
            if let Some(r) = st["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if let Some(t) = st.get("terminated").filter(|t| t.is_object()) {
                reason = match t["reason"].as_str() {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ if t["signal"].as_i64().is_some_and(|x| x != 0) => format!("Signal:{}", t["signal"]),
                    _ => format!("ExitCode:{}", t["exitCode"]),
                };
            } else if c["ready"].as_bool() == Some(true) && st["running"].is_object() {
                running = true;
            }
        }
        if reason == "Completed" && running {
            reason = "Running".into();
        }
    }
    if p["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    reason
}

fn table(items: &[Value], wide: bool, namespaces: bool, now: i64) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if namespaces {
        head.insert(0, "NAMESPACE");
    }
    if wide {
        head.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    }
    rows.push(head.iter().map(|s| s.to_string()).collect());
    for p in items {
        let statuses = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        let total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
        let ready = statuses.iter().filter(|c| c["ready"].as_bool() == Some(true)).count();
        let restarts: i64 = statuses.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum();
        let last_restart = statuses
            .iter()
            .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp())
            .max();
        let restarts = match last_restart {
            Some(t) if restarts > 0 => format!("{restarts} ({} ago)", crate::model::time::human_duration(now - t)),
            _ => restarts.to_string(),
        };
        let age = p["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or("<unknown>".into(), |t| crate::model::time::human_duration(now - t.timestamp()));
        let mut row = vec![
            p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            format!("{ready}/{total}"),
            pod_status_text(p),
            restarts,
            age,
        ];
        if namespaces {
            row.insert(0, p["metadata"]["namespace"].as_str().unwrap_or("").to_string());
        }
        if wide {
            row.push(p["status"]["podIP"].as_str().unwrap_or("<none>").to_string());
            row.push(p["spec"]["nodeName"].as_str().unwrap_or("<none>").to_string());
            row.extend(["<none>".to_string(), "<none>".to_string()]);
        }
        rows.push(row);
    }
    columns(rows)
}

/// Rows as kubectl prints them: each column as wide as its widest cell, three spaces apart.
fn columns(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len() - 1;
        for (i, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push('\n');
    }
    out
}

pub fn delete(root: &Path, a: DeleteArgs) -> Result<i32> {
    check_kind(&a.resource)?;
    let socket = a.socket.path(root);
    let path = format!("/api/v1/namespaces/{}/pods/{}", a.namespace, a.name);
    let query = a.grace_period.map(|g| format!("?gracePeriodSeconds={g}")).unwrap_or_default();
    local::call(&socket, "DELETE", &format!("{path}{query}"), None)?.json()?;
    let _ = writeln!(std::io::stdout(), "pod \"{}\" deleted", a.name);
    if a.wait {
        let start = Instant::now();
        loop {
            let r = local::call(&socket, "GET", &path, None)?;
            if r.code == 404 {
                break;
            }
            if start.elapsed() > Duration::from_secs(3600) {
                bail!("pod \"{}\" is still there after an hour", a.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(0)
}

/// `nodectl top pods`: cpu in millicores and memory (working set) in MiB, as `kubectl top`.
pub fn top(root: &Path, a: TopArgs) -> Result<i32> {
    check_kind(&a.resource)?;
    let rows = local::call(&a.socket.path(root), "GET", "/api/v1/top", None)?.json()?;
    let mut rows: Vec<&Value> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| a.all_namespaces || r["namespace"] == a.namespace.as_str())
        .filter(|r| a.name.as_deref().is_none_or(|n| r["pod"] == n))
        .collect();
    rows.sort_by_key(|r| (r["namespace"].to_string(), r["pod"].to_string(), r["container"].to_string()));
    if rows.is_empty() {
        if let Some(n) = &a.name {
            bail!("metrics not available yet for pod {}/{n}", a.namespace);
        }
        let _ = writeln!(std::io::stderr(), "No resources found in {} namespace.", a.namespace);
        return Ok(0);
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut head = if a.containers { vec!["POD", "NAME"] } else { vec!["NAME"] };
    head.extend(["CPU(cores)", "MEMORY(bytes)"]);
    if a.all_namespaces {
        head.insert(0, "NAMESPACE");
    }
    out.push(head.iter().map(|h| h.to_string()).collect());
    // Per pod: its containers summed; per container: one row each.
    let mut sums: Vec<(String, String, String, u64, u64)> = Vec::new();
    for r in rows {
        let (ns, pod, c) = (
            r["namespace"].as_str().unwrap_or(""),
            r["pod"].as_str().unwrap_or(""),
            r["container"].as_str().unwrap_or(""),
        );
        match sums.last_mut() {
            Some(last) if !a.containers && last.0 == ns && last.1 == pod => {
                last.3 += n(&r["millicores"]);
                last.4 += n(&r["workingSet"]);
            }
            _ => sums.push((ns.into(), pod.into(), c.into(), n(&r["millicores"]), n(&r["workingSet"]))),
        }
    }
    for (ns, pod, c, cpu, mem) in sums {
        let mut row = if a.containers { vec![pod, c] } else { vec![pod] };
        row.extend([format!("{cpu}m"), format!("{}Mi", mem >> 20)]);
        if a.all_namespaces {
            row.insert(0, ns);
        }
        out.push(row);
    }
    say(&columns(out))
}

pub fn logs(root: &Path, a: LogsArgs) -> Result<i32> {
    let mut q = vec![];
    if let Some(c) = &a.container {
        q.push(format!("container={c}"));
    }
    if a.previous {
        q.push("previous=true".into());
    }
    if let Some(t) = a.tail.filter(|t| *t >= 0) {
        q.push(format!("tailLines={t}"));
    }
    if a.timestamps {
        q.push("timestamps=true".into());
    }
    if a.follow {
        q.push("follow=true".into());
    }
    let path = format!("/api/v1/namespaces/{}/pods/{}/log?{}", a.namespace, a.pod, q.join("&"));
    if a.follow {
        return local::stream(&a.socket.path(root), &path, &mut std::io::stdout());
    }
    let r = local::call(&a.socket.path(root), "GET", &path, None)?;
    if r.code != 200 {
        return r.json().map(|_| 1);
    }
    let _ = std::io::stdout().write_all(&r.body);
    Ok(0)
}

/// Sends a manifest to the daemon: created (`run --detach`), or created or replaced (`apply`).
pub fn send(root: &Path, socket: &SocketArgs, file: &Path, apply: bool) -> Result<i32> {
    // Checked here first, so errors name the file.
    crate::model::manifest::load(file)?;
    let text = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let path = if apply { "/api/v1/pods?apply=true" } else { "/api/v1/pods" };
    let r = local::call(&socket.path(root), "POST", path, Some(text))?;
    let verb = r.applied.clone().unwrap_or_else(|| "created".into());
    let pod = r.json()?;
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let _ = writeln!(std::io::stdout(), "pod/{name} {verb}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_reads_as_kubectls() {
        let p = serde_json::json!({"spec": {"initContainers": [{}, {}]}, "status": {"phase": "Pending",
            "initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}, {"state": {"running": {}}}]}});
        assert_eq!(pod_status_text(&p), "Init:1/2");
        let p = serde_json::json!({"status": {"phase": "Running",
            "containerStatuses": [{"ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status_text(&p), "CrashLoopBackOff");
        let p = serde_json::json!({"status": {"phase": "Succeeded",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(pod_status_text(&p), "Completed");
        let p = serde_json::json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status_text(&p), "Terminating");
    }

    #[test]
    fn tables_pad_columns_by_three_spaces_as_kubectl() {
        let p = serde_json::json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{}]},
            "status": {"phase": "Running", "podIP": "10.0.0.2",
                "containerStatuses": [{"ready": true, "restartCount": 0, "state": {"running": {}}}]}});
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:05Z").unwrap().timestamp();
        assert_eq!(
            table(&[p], false, false, now),
            "NAME   READY   STATUS    RESTARTS   AGE\nweb    1/1     Running   0          5s\n"
        );
    }
}

#[derive(Args)]
pub struct DescribeArgs {
    /// pod (also pods, po)
    resource: String,
    name: String,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    #[command(flatten)]
    socket: SocketArgs,
}

/// A time as kubectl describe prints it (RFC 1123).
fn describe_time(v: &Value) -> String {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or("<unknown>".into(), |t| t.format("%a, %d %b %Y %H:%M:%S %z").to_string())
}

fn state_lines(out: &mut String, label: &str, st: &Value) {
    let pad = |k: &str| format!("      {k}:{}", " ".repeat(14usize.saturating_sub(k.len() + 1)));
    if let Some(r) = st.get("running").filter(|r| r.is_object()) {
        out.push_str(&format!("    {label}Running\n{}{}\n", pad("Started"), describe_time(&r["startedAt"])));
    } else if let Some(w) = st.get("waiting").filter(|w| w.is_object()) {
        out.push_str(&format!("    {label}Waiting\n{}{}\n", pad("Reason"), w["reason"].as_str().unwrap_or("")));
    } else if let Some(t) = st.get("terminated").filter(|t| t.is_object()) {
        out.push_str(&format!("    {label}Terminated\n"));
        out.push_str(&format!("{}{}\n", pad("Reason"), t["reason"].as_str().unwrap_or("")));
        if let Some(m) = t["message"].as_str() {
            out.push_str(&format!("{}{m}\n", pad("Message")));
        }
        out.push_str(&format!("{}{}\n", pad("Exit Code"), t["exitCode"]));
        if let Some(s) = t["signal"].as_i64() {
            out.push_str(&format!("{}{s}\n", pad("Signal")));
        }
        out.push_str(&format!("{}{}\n", pad("Started"), describe_time(&t["startedAt"])));
        out.push_str(&format!("{}{}\n", pad("Finished"), describe_time(&t["finishedAt"])));
    }
}

/// kubectl describe's text for a pod and its events.
pub fn describe_text(p: &Value, events: &[Value], now: i64) -> String {
    let kv = |k: &str, v: &str| format!("{k}:{}{v}\n", " ".repeat(18usize.saturating_sub(k.len() + 1)));
    let map = |v: &Value| match v.as_object().filter(|m| !m.is_empty()) {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("\n                  "),
        None => "<none>".into(),
    };
    let mut out = String::new();
    out.push_str(&kv("Name", p["metadata"]["name"].as_str().unwrap_or("")));
    out.push_str(&kv("Namespace", p["metadata"]["namespace"].as_str().unwrap_or("default")));
    out.push_str(&kv("Node", p["spec"]["nodeName"].as_str().unwrap_or("<none>")));
    out.push_str(&kv("Start Time", &describe_time(&p["status"]["startTime"])));
    out.push_str(&kv("Labels", &map(&p["metadata"]["labels"])));
    out.push_str(&kv("Annotations", &map(&p["metadata"]["annotations"])));
    out.push_str(&kv("Status", &pod_status_text(p)));
    if let Some(m) = p["status"]["message"].as_str() {
        out.push_str(&kv("Message", m));
    }
    out.push_str(&kv("IP", p["status"]["podIP"].as_str().unwrap_or("")));
    let statuses = |key: &str| p["status"][key].as_array().cloned().unwrap_or_default();
    for (title, spec_key, status_key) in [
        ("Init Containers", "initContainers", "initContainerStatuses"),
        ("Containers", "containers", "containerStatuses"),
    ] {
        let Some(cs) = p["spec"][spec_key].as_array().filter(|c| !c.is_empty()) else { continue };
        out.push_str(&format!("{title}:\n"));
        let sts = statuses(status_key);
        for c in cs {
            let name = c["name"].as_str().unwrap_or("");
            let st = sts.iter().find(|s| s["name"] == name).cloned().unwrap_or_default();
            let f = |k: &str, v: &str| format!("    {k}:{}{v}\n", " ".repeat(16usize.saturating_sub(k.len() + 1)));
            out.push_str(&format!("  {name}:\n"));
            out.push_str(&f("Container ID", st["containerID"].as_str().unwrap_or("")));
            out.push_str(&f("Image", c["image"].as_str().unwrap_or("")));
            if let Some(cmd) = c["command"].as_array() {
                out.push_str("    Command:\n");
                for a in cmd {
                    out.push_str(&format!("      {}\n", a.as_str().unwrap_or("")));
                }
            }
            state_lines(&mut out, "State:          ", &st["state"]);
            if st["lastState"].as_object().is_some_and(|m| !m.is_empty()) {
                state_lines(&mut out, "Last State:     ", &st["lastState"]);
            }
            out.push_str(&f("Ready", if st["ready"] == true { "True" } else { "False" }));
            out.push_str(&f("Restart Count", &st["restartCount"].as_i64().unwrap_or(0).to_string()));
        }
    }
    out.push_str("Conditions:\n  Type              Status\n");
    for c in p["status"]["conditions"].as_array().into_iter().flatten() {
        let t = c["type"].as_str().unwrap_or("");
        out.push_str(&format!(
            "  {t}{}{}\n",
            " ".repeat(18usize.saturating_sub(t.len())),
            c["status"].as_str().unwrap_or("")
        ));
    }
    out.push_str(&kv("QoS Class", p["status"]["qosClass"].as_str().unwrap_or("")));
    if events.is_empty() {
        out.push_str("Events:           <none>\n");
        return out;
    }
    out.push_str("Events:\n");
    let mut rows = vec![
        ["Type", "Reason", "Age", "From", "Message"].map(String::from),
        ["----", "------", "----", "----", "-------"].map(String::from),
    ];
    for e in events {
        let age = |k: &str| {
            e[k].as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or("<unknown>".into(), |t| crate::model::time::human_duration(now - t.timestamp()))
        };
        let count = e["count"].as_i64().unwrap_or(1);
        let when = if count > 1 {
            format!("{} (x{count} over {})", age("lastTimestamp"), age("firstTimestamp"))
        } else {
            age("lastTimestamp")
        };
        rows.push([
            e["type"].as_str().unwrap_or("").to_string(),
            e["reason"].as_str().unwrap_or("").to_string(),
            when,
            "kubelet".to_string(),
            e["message"].as_str().unwrap_or("").to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        out.push_str("  ");
        for (i, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if i < 4 {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    }
    out
}

pub fn describe(root: &Path, a: DescribeArgs) -> Result<i32> {
    check_kind(&a.resource)?;
    let socket = a.socket.path(root);
    let path = format!("/api/v1/namespaces/{}/pods/{}", a.namespace, a.name);
    let pod = local::call(&socket, "GET", &path, None)?.json()?;
    let events = local::call(&socket, "GET", &format!("{path}/events"), None)?.json()?;
    let events = events["items"].as_array().cloned().unwrap_or_default();
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).timestamp();
    say(&describe_text(&pod, &events, now))
}
