//! A pod's status as the kubelet writes it, from what its owner knows: phase, conditions,
//! addresses, and each container's state. Pure, so each rule is tested on its own.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus as K8sStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::node::reconcile::{ContainerStatus, State, Terminated};

/// What the daemon knows of a pod besides its containers.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Option<Ipv4Addr>,
    pub start_time: Option<SystemTime>,
    /// Set while the sandbox is being made, and when making it failed (the message).
    pub creating: bool,
    pub failed: Option<String>,
    /// The reason for `failed` (CreatePodSandboxError if None; OutOfDisk for a full disk).
    pub failed_reason: Option<&'static str>,
    /// Being deleted.
    pub terminating: bool,
    /// Containers not yet made, each with the kubelet's reason and message
    /// (ErrImageNeverPull, ErrImagePull, ImagePullBackOff, InvalidImageName).
    pub waiting: std::collections::BTreeMap<String, (String, String)>,
}

fn time(t: SystemTime) -> Time {
    Time(chrono::DateTime::<chrono::Utc>::from(t))
}

fn terminated(t: &Terminated, id: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason().to_string()),
        message: t.message.clone(),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        container_id: Some(id.to_string()),
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.to_string()), message }),
        ..Default::default()
    }
}

/// One container's status. `id` is the runtime's container id, `image` its image;
/// `pending` why it is not made yet, if it is not.
pub fn container_status(
    c: &ContainerStatus,
    id: &str,
    image: &str,
    pending: Option<(&str, Option<String>)>,
) -> K8sStatus {
    let container_id = format!("nodectl://{id}");
    let (state, ready, started) = match &c.state {
        State::Waiting => {
            let (reason, message) = pending.unwrap_or(("PodInitializing", None));
            (waiting(reason, message), false, false)
        }
        State::ConfigError { message, .. } => {
            (waiting("CreateContainerConfigError", Some(message.clone())), false, false)
        }
        State::BackOff { .. } => {
            let msg =
                c.last.as_ref().map(|t| format!("back-off restarting failed container {} ({})", c.name, t.reason()));
            (waiting("CrashLoopBackOff", msg), false, false)
        }
        State::Running { started_at, .. } => (
            ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(time(*started_at)) }),
                ..Default::default()
            },
            c.ready,
            c.started,
        ),
        State::Exited(t) | State::Done(t) => {
            (ContainerState { terminated: Some(terminated(t, &container_id)), ..Default::default() }, false, false)
        }
    };
    K8sStatus {
        name: c.name.clone(),
        state: Some(state),
        last_state: c
            .last
            .as_ref()
            .map(|t| ContainerState { terminated: Some(terminated(t, &container_id)), ..Default::default() }),
        ready,
        started: Some(started),
        restart_count: c.restart_count as i32,
        image: image.to_string(),
        image_id: String::new(),
        container_id: matches!(c.state, State::Running { .. } | State::Exited(_) | State::Done(_))
            .then_some(container_id),
        ..Default::default()
    }
}

/// The pod's phase, as the kubelet's getPhase decides it.
pub fn phase(statuses: &[ContainerStatus], facts: &Facts) -> &'static str {
    if facts.failed.is_some() {
        return "Failed";
    }
    let (inits, regular): (Vec<_>, Vec<_>) = statuses.iter().partition(|c| c.init);
    let init_failed = inits.iter().any(|c| matches!(&c.state, State::Done(t) if t.exit_code != 0 || t.oom_killed));
    if init_failed {
        return "Failed";
    }
    if inits.iter().any(|c| !matches!(c.state, State::Done(_))) {
        return "Pending";
    }
    let running = regular.iter().filter(|c| matches!(c.state, State::Running { .. })).count();
    // A container waiting for its config counts as waiting until it has run once (then it
    // is a stopped one, as the kubelet's getPhase has it).
    let waiting = regular
        .iter()
        .filter(|c| match c.state {
            State::Waiting => true,
            State::ConfigError { .. } => c.last.is_none(),
            _ => false,
        })
        .count();
    let done: Vec<&Terminated> = regular
        .iter()
        .filter_map(|c| match &c.state {
            State::Done(t) => Some(t),
            _ => None,
        })
        .collect();
    let failed = done.iter().filter(|t| t.exit_code != 0 || t.oom_killed).count();
    if waiting > 0 && running == 0 && done.is_empty() {
        return "Pending";
    }
    if done.len() == regular.len() && !regular.is_empty() {
        return if failed > 0 { "Failed" } else { "Succeeded" };
    }
    // Running, or waiting to restart: the kubelet calls both Running.
    "Running"
}

fn condition(kind: &str, ok: bool, reason: Option<&str>) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: (!ok).then(|| reason.unwrap_or_default().to_string()).filter(|r| !r.is_empty()),
        ..Default::default()
    }
}

/// The QoS class the kubelet gives: Guaranteed when every container has cpu and memory
/// limits equal to its requests, BestEffort when none has any, else Burstable.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else { return "BestEffort" };
    let all: Vec<_> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (limits.get(res), requests.get(res)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The pod's whole status.
pub fn pod_status(pod: &Pod, key: &str, statuses: &[ContainerStatus], facts: &Facts) -> PodStatus {
    let image_of = |name: &str| {
        pod.spec
            .iter()
            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    let failed_reason = facts.failed_reason.unwrap_or("CreatePodSandboxError");
    let pending = |name: &str| match facts.waiting.get(name) {
        Some((reason, message)) => Some((reason.as_str(), Some(message.clone()))),
        None if facts.creating => Some(("ContainerCreating", None)),
        // Never made: they wait with the pod's reason, which kubectl's table then shows.
        None => facts.failed.as_ref().map(|_| (failed_reason, None)),
    };
    let make =
        |c: &ContainerStatus| container_status(c, &format!("{key}.{}", c.name), &image_of(&c.name), pending(&c.name));
    let init_statuses: Vec<K8sStatus> = statuses.iter().filter(|c| c.init).map(make).collect();
    let container_statuses: Vec<K8sStatus> = statuses.iter().filter(|c| !c.init).map(make).collect();
    let initialized =
        statuses.iter().filter(|c| c.init).all(|c| matches!(&c.state, State::Done(t) if t.exit_code == 0));
    let ready = !container_statuses.is_empty() && container_statuses.iter().all(|c| c.ready) && !facts.terminating;
    let phase = phase(statuses, facts);
    let unready = if phase == "Succeeded" || phase == "Failed" { "PodCompleted" } else { "ContainersNotReady" };
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(vec![
            condition("PodScheduled", true, None),
            condition("Initialized", initialized, Some("ContainersNotInitialized")),
            condition("ContainersReady", ready, Some(unready)),
            condition("Ready", ready, Some(unready)),
        ]),
        pod_ip: facts.pod_ip.map(|ip| ip.to_string()),
        pod_ips: facts.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        host_ip: facts.host_ip.map(|ip| ip.to_string()),
        start_time: facts.start_time.map(time),
        qos_class: Some(qos_class(pod).to_string()),
        reason: facts.failed.as_ref().map(|_| failed_reason.to_string()),
        message: facts.failed.clone(),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(container_statuses),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn c(name: &str, init: bool, state: State) -> ContainerStatus {
        let mut s = ContainerStatus::new(name, init, Duration::from_secs(10));
        // Running with no probes: started and ready.
        s.ready = matches!(state, State::Running { .. });
        s.started = s.ready;
        s.state = state;
        s
    }

    fn done(code: i32) -> State {
        State::Done(Terminated {
            exit_code: code,
            signal: None,
            oom_killed: false,
            message: None,
            started_at: Some(t0()),
            finished_at: t0(),
            unknown: false,
        })
    }

    fn running() -> State {
        State::Running { pid: 1, started_at: t0(), signalled: None, kill_at: None }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let f = Facts::default();
        assert_eq!(phase(&[c("i", true, running()), c("a", false, State::Waiting)], &f), "Pending");
        assert_eq!(phase(&[c("i", true, done(0)), c("a", false, running())], &f), "Running");
        assert_eq!(phase(&[c("a", false, done(0)), c("b", false, done(0))], &f), "Succeeded");
        assert_eq!(phase(&[c("a", false, done(0)), c("b", false, done(2))], &f), "Failed");
        assert_eq!(phase(&[c("i", true, done(1)), c("a", false, State::Waiting)], &f), "Failed");
        let until = t0();
        assert_eq!(phase(&[c("a", false, State::BackOff { until })], &f), "Running");
        let failed = Facts { failed: Some("pool full".into()), ..Default::default() };
        assert_eq!(phase(&[c("a", false, State::Waiting)], &failed), "Failed");
    }

    #[test]
    fn a_crash_looping_container_waits_with_its_last_termination() {
        let mut s = c("a", false, State::BackOff { until: t0() });
        s.restart_count = 3;
        s.last = match done(1) {
            State::Done(t) => Some(t),
            _ => None,
        };
        let k = container_status(&s, "p-1.a", "busybox", None);
        let w = k.state.unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(k.restart_count, 3);
        let last = k.last_state.unwrap().terminated.unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert!(!k.ready);
    }

    #[test]
    fn a_running_pod_is_ready_with_its_ip_and_conditions() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "busybox",
                "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}}]}
        }))
        .unwrap();
        let facts = Facts { pod_ip: Some(Ipv4Addr::new(10, 0, 0, 2)), start_time: Some(t0()), ..Default::default() };
        let s = pod_status(&pod, "p-1", &[c("a", false, running())], &facts);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(s.qos_class.as_deref(), Some("Guaranteed"));
        let conds: Vec<(String, String)> = s.conditions.unwrap().into_iter().map(|c| (c.type_, c.status)).collect();
        assert_eq!(
            conds,
            [("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", "True"), ("Ready", "True")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!(cs.container_id.as_deref(), Some("nodectl://p-1.a"));
        assert!(cs.state.as_ref().unwrap().running.is_some());
    }
}
