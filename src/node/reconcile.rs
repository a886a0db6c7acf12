//! One step of keeping a pod in its desired state: `desired + observed → actions`, with no
//! I/O, so every decision the kubelet's pod worker makes is tested on its own. The caller
//! (the foreground `nodectl run`, the daemon's per-pod worker) observes the pod through its
//! monitor's records, asks for a [`Plan`], carries the actions out, records what it did,
//! and asks again when something changes or the plan's `wake_at` comes.
//!
//! Times are wall-clock (`SystemTime`): the state they belong to is written to disk and read
//! back by a daemon that restarted.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The kubelet's container restart backoff: doubling from the initial delay up to 5
/// minutes, back to the start after 10 minutes of running.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The exit code given to a container that could not be started at all (containerd's
/// StartError: the process never ran).
pub const START_ERROR_CODE: i32 = 128;

/// Whether a container that exited with `code` runs again, as the kubelet decides it: an
/// init container that fails is tried again unless the pod never restarts; a regular
/// container follows restartPolicy.
pub fn should_restart(init: bool, policy: RestartPolicy, code: i32) -> bool {
    match (init, policy) {
        (true, RestartPolicy::Never) => false,
        (true, _) => code != 0,
        (false, RestartPolicy::Always) => true,
        (false, RestartPolicy::OnFailure) => code != 0,
        (false, RestartPolicy::Never) => false,
    }
}

/// The delay before the next restart and the backoff after it: doubling from `initial`
/// up to MAX_BACKOFF, back to `initial` once the container ran for BACKOFF_RESET.
pub fn backoff(current: Duration, initial: Duration, ran: Duration) -> (Duration, Duration) {
    let delay = if ran >= BACKOFF_RESET { initial } else { current };
    (delay, (delay * 2).min(MAX_BACKOFF))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// A checked manifest's value; the default is Always, as in Kubernetes.
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }
}

/// What the pod should be: the parts of its spec the decisions depend on, and whether it
/// is being stopped.
#[derive(Clone, Debug)]
pub struct Desired {
    pub restart_policy: RestartPolicy,
    /// The first restart's delay (the kubelet's is 10 s).
    pub initial_backoff: Duration,
    /// When a stop was asked for: SIGKILL follows at this instant (now + the grace period;
    /// a second stop with a shorter grace moves it closer, never later).
    pub stop_deadline: Option<SystemTime>,
    /// Each container's probes (by index; missing means none).
    pub probes: Vec<Probes>,
    /// Which containers have a preStop hook (by index; missing means none).
    pub pre_stop: Vec<bool>,
}

impl Desired {
    pub fn probes_of(&self, i: usize) -> Probes {
        self.probes.get(i).copied().unwrap_or_default()
    }
}

/// The three probes of the kubelet, in the order they gate each other: liveness and
/// readiness run once the startup probe succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness];

    fn index(self) -> usize {
        self as usize
    }

    /// As the kubelet's events name it ("Liveness probe failed: …").
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// When a probe runs and how many results turn it (what it runs is the owner's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The grace period of a kill it causes (the pod's unless the probe sets one).
    pub kill_grace: Duration,
}

/// A container's probes, by [`ProbeKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probes(pub [Option<ProbeTiming>; 3]);

impl Probes {
    pub fn get(&self, kind: ProbeKind) -> Option<&ProbeTiming> {
        self.0[kind.index()].as_ref()
    }
}

/// What one probe of a running container has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRecord {
    /// Results in a row: successes, or failures.
    pub successes: u32,
    pub failures: u32,
    /// When it last began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<SystemTime>,
    /// A run was begun and its result has not come.
    #[serde(default)]
    pub in_flight: bool,
}

/// What a probe's result did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The container is to be killed and restarted as its policy says (a liveness or
    /// startup probe failed failureThreshold times in a row).
    pub kill: bool,
}

/// Whether a preStop hook ran for a container being stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Hook {
    #[default]
    NotRun,
    Running,
    Done,
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    pub exit_code: i32,
    /// The signal that ended it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (its cgroup counted an oom_kill).
    #[serde(default)]
    pub oom_killed: bool,
    /// Why it did not run, when it could not be started; the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at: Option<SystemTime>,
    pub finished_at: SystemTime,
    /// Its end was not seen: its monitor died, and it was killed when found
    /// (the kubelet's ContainerStatusUnknown).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

impl Terminated {
    /// The kubelet's reason: OOMKilled, Completed or Error (ContainerCannotRun when it
    /// never started, ContainerStatusUnknown when its end was not seen).
    pub fn reason(&self) -> &'static str {
        if self.unknown {
            "ContainerStatusUnknown"
        } else if self.oom_killed {
            "OOMKilled"
        } else if self.message.is_some() {
            "ContainerCannotRun"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }

    /// The code a pod that failed with it reports (`nodectl run`'s exit code).
    pub fn pod_exit_code(&self) -> i32 {
        if self.oom_killed { 137 } else { self.exit_code }
    }

    fn ran(&self) -> Duration {
        self.started_at.and_then(|s| self.finished_at.duration_since(s).ok()).unwrap_or_default()
    }
}

/// Where a container is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// Never started: waiting for the init containers before it.
    Waiting,
    /// To be started again once `until` comes (the kubelet's CrashLoopBackOff).
    BackOff { until: SystemTime },
    /// Its configuration could not be made into a container (the kubelet's
    /// CreateContainerConfigError: runAsNonRoot with an image that runs as root, a subPath
    /// that escapes its volume…); tried again at `retry_at`. Not a run: no restart counts.
    ConfigError { message: String, retry_at: SystemTime },
    Running {
        pid: i32,
        started_at: SystemTime,
        /// The stop signal already sent to it (15, then 9), so it is sent once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signalled: Option<i32>,
        /// A failed liveness or startup probe asked for it to be killed: SIGTERM now,
        /// SIGKILL at this instant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kill_at: Option<SystemTime>,
    },
    /// It ended and nothing is decided yet.
    Exited(Terminated),
    /// It ended and will not run again.
    Done(Terminated),
}

/// What is known of one container: observed (its monitor's records) and decided before
/// (restarts, backoff).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub init: bool,
    pub state: State,
    pub restart_count: u32,
    /// The delay the next restart waits.
    pub backoff: Duration,
    /// How it ended last time (kubectl's lastState).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Terminated>,
    /// Running, and its readiness probe (if any) passed.
    #[serde(default)]
    pub ready: bool,
    /// Running, and its startup probe (if any) passed.
    #[serde(default)]
    pub started: bool,
    /// Its probes' records in this run, by [`ProbeKind`].
    #[serde(default)]
    pub probes: [ProbeRecord; 3],
    /// Its preStop hook, once the pod is being stopped.
    #[serde(default)]
    pub pre_stop: Hook,
    /// How many of its runs the kernel's OOM killer ended.
    #[serde(default)]
    pub oom_kills: u32,
}

impl ContainerStatus {
    pub fn new(name: &str, init: bool, initial_backoff: Duration) -> ContainerStatus {
        ContainerStatus {
            name: name.to_string(),
            init,
            state: State::Waiting,
            restart_count: 0,
            backoff: initial_backoff,
            last: None,
            ready: false,
            started: false,
            probes: Default::default(),
            pre_stop: Hook::NotRun,
            oom_kills: 0,
        }
    }

    /// It began running (a new run): started and ready at once unless a probe says
    /// otherwise later, as the kubelet has it.
    pub fn now_running(&mut self, pid: i32, started_at: SystemTime, probes: &Probes) {
        self.state = State::Running { pid, started_at, signalled: None, kill_at: None };
        self.probes = Default::default();
        self.started = probes.get(ProbeKind::Startup).is_none();
        self.ready = self.started && probes.get(ProbeKind::Readiness).is_none();
    }

    /// It ended: neither started nor ready.
    pub fn now_ended(&mut self, t: Terminated) {
        if t.oom_killed {
            self.oom_kills += 1;
        }
        self.state = State::Exited(t);
        self.started = false;
        self.ready = false;
        for p in &mut self.probes {
            p.in_flight = false;
        }
    }

    /// A probe of this run gave its result: count it, and say what follows.
    pub fn probed(&mut self, kind: ProbeKind, ok: bool, probes: &Probes, now: SystemTime) -> Verdict {
        let Some(timing) = probes.get(kind) else { return Verdict::default() };
        let State::Running { kill_at, .. } = &mut self.state else { return Verdict::default() };
        let r = &mut self.probes[kind.index()];
        r.in_flight = false;
        if ok {
            r.successes += 1;
            r.failures = 0;
        } else {
            r.failures += 1;
            r.successes = 0;
        }
        let (succeeded, failed) =
            (r.successes >= timing.success_threshold.max(1), r.failures >= timing.failure_threshold.max(1));
        match kind {
            ProbeKind::Startup if succeeded => {
                self.started = true;
                self.ready = probes.get(ProbeKind::Readiness).is_none();
            }
            ProbeKind::Readiness if succeeded => self.ready = true,
            ProbeKind::Readiness if failed => self.ready = false,
            ProbeKind::Startup | ProbeKind::Liveness if failed && kill_at.is_none() => {
                *kill_at = Some(now + timing.kill_grace);
                self.ready = false;
                return Verdict { kill: true };
            }
            _ => {}
        }
        Verdict::default()
    }
}

/// What to do now. The caller records each action's effect in the container's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create and start the container (index into the statuses).
    Start(usize),
    /// Send this signal to the container's processes (all of them with SIGKILL).
    Signal(usize, i32),
    /// Run this probe of the container now.
    Probe(usize, ProbeKind),
    /// Run the container's preStop hook (the pod is being stopped; SIGTERM follows it).
    PreStop(usize),
    /// It ended and runs again at `at`; `backoff` is the delay after that.
    Restart { index: usize, at: SystemTime, delay: Duration, backoff: Duration },
    /// It ended and does not run again.
    Finish(usize),
}

/// The actions of one step, and when to look again if nothing happens before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Option<SystemTime>,
    /// Set once nothing runs or will run: the pod is over, with this outcome.
    pub over: Option<Outcome>,
}

/// How a pod ended: the first container that failed for good, or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub failed: Option<(String, i32)>,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        self.failed.as_ref().map_or(0, |(_, c)| *c)
    }
}

/// The first container that ended for good with a failure, in the order they finished
/// (`finished_at`), as `nodectl run` reports it.
fn first_failure(statuses: &[ContainerStatus]) -> Option<(String, i32, SystemTime)> {
    statuses
        .iter()
        .filter_map(|c| match &c.state {
            State::Done(t) if t.pod_exit_code() != 0 => Some((c.name.clone(), t.pod_exit_code(), t.finished_at)),
            _ => None,
        })
        .min_by_key(|(_, _, at)| *at)
}

fn earlier(a: Option<SystemTime>, b: SystemTime) -> Option<SystemTime> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// One step: what to do with each container given where it is.
pub fn reconcile(desired: &Desired, statuses: &[ContainerStatus], now: SystemTime) -> Plan {
    let mut plan = Plan::default();
    let failure = first_failure(statuses);
    let stopping = desired.stop_deadline;
    // Ended containers are decided first; the rest of the step sees their decision.
    let mut after: Vec<State> = statuses.iter().map(|c| c.state.clone()).collect();
    for (i, c) in statuses.iter().enumerate() {
        let State::Exited(t) = &c.state else { continue };
        if stopping.is_none() && should_restart(c.init, desired.restart_policy, t.exit_code) {
            let (delay, backoff) = backoff(c.backoff, desired.initial_backoff, t.ran());
            let at = now + delay;
            plan.actions.push(Action::Restart { index: i, at, delay, backoff });
            after[i] = State::BackOff { until: at };
            continue;
        }
        plan.actions.push(Action::Finish(i));
        after[i] = State::Done(t.clone());
    }
    let failed_now = failure.is_some() || after.iter().any(|s| matches!(s, State::Done(t) if t.pod_exit_code() != 0));

    if let Some(deadline) = stopping {
        let kill = now >= deadline;
        // A container waiting to restart is left as it is: it did not fail for good.
        for (i, state) in after.iter().enumerate() {
            if let State::Running { signalled, .. } = state {
                // The hook runs first; SIGTERM when it is done (SIGKILL at the deadline
                // in any case).
                let hook = statuses[i].pre_stop;
                if !kill && signalled.is_none() && desired.pre_stop.get(i).copied().unwrap_or(false) {
                    if hook == Hook::NotRun {
                        plan.actions.push(Action::PreStop(i));
                    }
                    if hook != Hook::Done {
                        continue;
                    }
                }
                let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
                if *signalled != Some(sig) && *signalled != Some(libc::SIGKILL) {
                    plan.actions.push(Action::Signal(i, sig));
                }
            }
        }
        if !kill {
            plan.wake_at = Some(deadline);
        }
    } else {
        // The next init container once those before it succeeded; every container once
        // all init containers did; no new container after a failure for good.
        let next_init = statuses.iter().zip(&after).position(|(c, s)| c.init && !matches!(s, State::Done(_)));
        for (i, (c, state)) in statuses.iter().zip(&after).enumerate() {
            match state {
                State::Running { started_at, signalled, kill_at, .. } => {
                    if let Some(at) = kill_at {
                        // A failed probe's kill: SIGTERM, then SIGKILL at its deadline.
                        let sig = if now >= *at { libc::SIGKILL } else { libc::SIGTERM };
                        if *signalled != Some(sig) && *signalled != Some(libc::SIGKILL) {
                            plan.actions.push(Action::Signal(i, sig));
                        }
                        if now < *at {
                            plan.wake_at = earlier(plan.wake_at, *at);
                        }
                        continue;
                    }
                    let probes = desired.probes_of(i);
                    for kind in ProbeKind::ALL {
                        let Some(t) = probes.get(kind) else { continue };
                        let r = &c.probes[kind.index()];
                        // Liveness and readiness wait for the startup probe; a startup
                        // probe that passed runs no more.
                        let gated = match kind {
                            ProbeKind::Startup => c.started,
                            _ => !c.started,
                        };
                        if gated || r.in_flight {
                            continue;
                        }
                        let due = r.last_run.map_or(*started_at + t.initial_delay, |l| l + t.period);
                        if due <= now {
                            plan.actions.push(Action::Probe(i, kind));
                        } else {
                            plan.wake_at = earlier(plan.wake_at, due);
                        }
                    }
                }
                State::BackOff { until } if *until <= now => plan.actions.push(Action::Start(i)),
                State::BackOff { until } => plan.wake_at = earlier(plan.wake_at, *until),
                State::ConfigError { retry_at, .. } if !failed_now => {
                    if *retry_at <= now {
                        plan.actions.push(Action::Start(i));
                    } else {
                        plan.wake_at = earlier(plan.wake_at, *retry_at);
                    }
                }
                State::Waiting if !failed_now => {
                    let due = match next_init {
                        Some(j) => j == i,
                        None => !c.init,
                    };
                    if due {
                        plan.actions.push(Action::Start(i));
                    }
                }
                _ => {}
            }
        }
    }

    // Over: nothing runs, nothing waits for a restart, and nothing is left to start (after
    // a failure for good or a stop, a waiting container never starts).
    let starts_over = stopping.is_some() || failed_now;
    let started = |i: usize| plan.actions.iter().any(|a| matches!(a, Action::Start(j) if *j == i));
    let over = after.iter().enumerate().all(|(i, s)| match s {
        State::Done(_) => true,
        State::Waiting | State::ConfigError { .. } => starts_over && !started(i),
        State::BackOff { .. } => stopping.is_some(),
        _ => false,
    });
    if over {
        let mut done: Vec<ContainerStatus> = statuses.to_vec();
        for (c, s) in done.iter_mut().zip(&after) {
            c.state = s.clone();
        }
        plan.over = Some(Outcome { failed: first_failure(&done).map(|(n, code, _)| (n, code)) });
        plan.wake_at = None;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    fn desired(policy: RestartPolicy) -> Desired {
        Desired {
            restart_policy: policy,
            initial_backoff: 100 * MS,
            stop_deadline: None,
            probes: vec![],
            pre_stop: vec![],
        }
    }

    fn pod(inits: &[&str], containers: &[&str]) -> Vec<ContainerStatus> {
        inits
            .iter()
            .map(|n| ContainerStatus::new(n, true, 100 * MS))
            .chain(containers.iter().map(|n| ContainerStatus::new(n, false, 100 * MS)))
            .collect()
    }

    fn running(at: SystemTime) -> State {
        State::Running { pid: 42, started_at: at, signalled: None, kill_at: None }
    }

    fn exited(code: i32, started: SystemTime, finished: SystemTime) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            oom_killed: false,
            message: None,
            started_at: Some(started),
            finished_at: finished,
            unknown: false,
        }
    }

    #[test]
    fn restart_policies_decide_as_the_kubelet_does() {
        use RestartPolicy::*;
        assert!(should_restart(false, Always, 0));
        assert!(should_restart(false, Always, 1));
        assert!(!should_restart(false, OnFailure, 0));
        assert!(should_restart(false, OnFailure, 1));
        assert!(!should_restart(false, Never, 1));
        assert!(should_restart(true, Always, 1));
        assert!(!should_restart(true, Always, 0));
        assert!(should_restart(true, OnFailure, 1));
        assert!(!should_restart(true, Never, 1));
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets_after_ten_minutes_running() {
        let initial = Duration::from_secs(10);
        let mut cur = initial;
        let mut delays = Vec::new();
        for _ in 0..7 {
            let (d, next) = backoff(cur, initial, Duration::from_secs(1));
            delays.push(d.as_secs());
            cur = next;
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(cur, initial, Duration::from_secs(600)).0, initial);
    }

    #[test]
    fn init_containers_start_one_at_a_time_then_every_container() {
        let d = desired(RestartPolicy::Always);
        let mut p = pod(&["i1", "i2"], &["a", "b"]);
        assert_eq!(reconcile(&d, &p, t0()).actions, [Action::Start(0)]);
        p[0].state = running(t0());
        assert_eq!(reconcile(&d, &p, t0()).actions, []);
        p[0].state = State::Done(exited(0, t0(), t0()));
        assert_eq!(reconcile(&d, &p, t0()).actions, [Action::Start(1)]);
        p[1].state = State::Done(exited(0, t0(), t0()));
        assert_eq!(reconcile(&d, &p, t0()).actions, [Action::Start(2), Action::Start(3)]);
    }

    #[test]
    fn a_failed_container_restarts_after_its_backoff_which_doubles() {
        let d = desired(RestartPolicy::OnFailure);
        let mut p = pod(&[], &["c"]);
        p[0].state = State::Exited(exited(1, t0(), t0() + 5 * MS));
        let plan = reconcile(&d, &p, t0() + 10 * MS);
        let at = t0() + 110 * MS;
        assert_eq!(plan.actions, [Action::Restart { index: 0, at, delay: 100 * MS, backoff: 200 * MS }]);
        assert_eq!(plan.wake_at, Some(at));
        assert_eq!(plan.over, None);
        p[0].state = State::BackOff { until: at };
        assert_eq!(reconcile(&d, &p, t0() + 50 * MS).actions, []);
        assert_eq!(reconcile(&d, &p, at).actions, [Action::Start(0)]);
    }

    #[test]
    fn a_container_whose_config_failed_is_tried_again_whatever_the_policy_until_the_pod_stops() {
        let mut d = desired(RestartPolicy::Never);
        let mut p = pod(&[], &["c"]);
        let retry_at = t0() + 100 * MS;
        p[0].state = State::ConfigError { message: "runAsNonRoot".into(), retry_at };
        let plan = reconcile(&d, &p, t0());
        assert_eq!((plan.actions, plan.wake_at, plan.over), (vec![], Some(retry_at), None));
        assert_eq!(reconcile(&d, &p, retry_at).actions, [Action::Start(0)]);
        // Stopped while it waits: nothing was started, and the pod is over at once.
        d.stop_deadline = Some(t0() + 1000 * MS);
        let plan = reconcile(&d, &p, t0());
        assert_eq!(plan.actions, []);
        assert_eq!(plan.over, Some(Outcome { failed: None }));
    }

    #[test]
    fn a_success_under_on_failure_finishes_the_pod_with_code_zero() {
        let d = desired(RestartPolicy::OnFailure);
        let mut p = pod(&[], &["c"]);
        p[0].state = State::Exited(exited(0, t0(), t0()));
        let plan = reconcile(&d, &p, t0());
        assert_eq!(plan.actions, [Action::Finish(0)]);
        assert_eq!(plan.over, Some(Outcome { failed: None }));
    }

    #[test]
    fn the_first_container_to_fail_for_good_gives_the_pods_code() {
        let d = desired(RestartPolicy::Never);
        let mut p = pod(&[], &["a", "b"]);
        p[0].state = State::Done(exited(3, t0(), t0() + 2 * MS));
        p[1].state = State::Exited(exited(7, t0(), t0() + 5 * MS));
        let plan = reconcile(&d, &p, t0() + 6 * MS);
        assert_eq!(plan.over.unwrap().failed, Some(("a".into(), 3)));
    }

    #[test]
    fn an_oom_kill_is_code_137_and_a_failed_init_container_ends_a_never_pod() {
        let d = desired(RestartPolicy::Never);
        let mut p = pod(&["init"], &["c"]);
        let mut t = exited(1, t0(), t0());
        t.oom_killed = true;
        p[0].state = State::Exited(t);
        let plan = reconcile(&d, &p, t0());
        assert_eq!(plan.actions, [Action::Finish(0)]);
        assert_eq!(plan.over.unwrap().failed, Some(("init".into(), 137)));
    }

    #[test]
    fn a_stop_sends_sigterm_once_then_sigkill_at_the_deadline_and_cancels_restarts() {
        let mut d = desired(RestartPolicy::Always);
        let deadline = t0() + Duration::from_secs(30);
        d.stop_deadline = Some(deadline);
        let mut p = pod(&[], &["a", "b"]);
        p[0].state = running(t0());
        p[1].state = State::BackOff { until: t0() + Duration::from_secs(1) };
        let plan = reconcile(&d, &p, t0());
        assert_eq!(plan.actions, [Action::Signal(0, libc::SIGTERM)]);
        assert_eq!(plan.wake_at, Some(deadline));
        p[0].state = State::Running { pid: 42, started_at: t0(), signalled: Some(libc::SIGTERM), kill_at: None };
        assert_eq!(reconcile(&d, &p, t0() + MS).actions, []);
        assert_eq!(reconcile(&d, &p, deadline).actions, [Action::Signal(0, libc::SIGKILL)]);
        // What exits while stopping is not restarted, and the pod is then over.
        p[0].state = State::Exited(exited(143, t0(), deadline));
        let plan = reconcile(&d, &p, deadline);
        assert_eq!(plan.actions, [Action::Finish(0)]);
        // The one waiting to restart did not fail for good: the pod's code is the other's.
        assert_eq!(plan.over.unwrap().failed, Some(("a".into(), 143)));
    }

    #[test]
    fn a_stop_before_anything_ran_ends_the_pod_at_once() {
        let mut d = desired(RestartPolicy::Always);
        d.stop_deadline = Some(t0());
        let p = pod(&["i"], &["c"]);
        let plan = reconcile(&d, &p, t0());
        assert_eq!(plan.actions, []);
        assert_eq!(plan.over, Some(Outcome { failed: None }));
    }

    #[test]
    fn after_a_failure_for_good_the_running_containers_run_on_and_no_new_one_starts() {
        let d = desired(RestartPolicy::Never);
        let mut p = pod(&["i"], &["c"]);
        p[0].state = State::Exited(exited(2, t0(), t0()));
        let plan = reconcile(&d, &p, t0());
        assert_eq!(plan.actions, [Action::Finish(0)]);
        assert_eq!(plan.over.unwrap().exit_code(), 2);

        let mut p = pod(&[], &["a", "b"]);
        p[0].state = State::Done(exited(1, t0(), t0()));
        p[1].state = running(t0());
        let plan = reconcile(&d, &p, t0());
        assert_eq!((plan.actions, plan.over), (vec![], None));
    }

    #[test]
    fn a_container_running_ten_minutes_restarts_after_the_initial_delay_again() {
        let d = desired(RestartPolicy::Always);
        let mut p = pod(&[], &["c"]);
        p[0].backoff = Duration::from_secs(300);
        p[0].state = State::Exited(exited(0, t0(), t0() + BACKOFF_RESET));
        let plan = reconcile(&d, &p, t0() + BACKOFF_RESET);
        assert!(
            matches!(plan.actions[..], [Action::Restart { delay, backoff, .. }] if delay == 100 * MS && backoff == 200 * MS),
            "{plan:?}"
        );
    }

    fn timing(initial: u32, period: u32) -> ProbeTiming {
        ProbeTiming {
            initial_delay: initial * MS,
            period: period * MS,
            success_threshold: 1,
            failure_threshold: 3,
            kill_grace: 50 * MS,
        }
    }

    #[test]
    fn a_liveness_probe_runs_on_its_schedule_and_three_failures_kill_the_container() {
        let mut d = desired(RestartPolicy::Always);
        let probes = Probes([None, Some(timing(20, 10)), None]);
        d.probes = vec![probes];
        let mut p = pod(&[], &["c"]);
        p[0].now_running(42, t0(), &probes);
        assert!(p[0].started && p[0].ready, "no startup or readiness probe: started and ready at once");
        let plan = reconcile(&d, &p, t0());
        assert_eq!((plan.actions, plan.wake_at), (vec![], Some(t0() + 20 * MS)));
        assert_eq!(reconcile(&d, &p, t0() + 20 * MS).actions, [Action::Probe(0, ProbeKind::Liveness)]);
        let mut now = t0() + 20 * MS;
        for n in 1..=3 {
            p[0].probes[1].last_run = Some(now);
            p[0].probes[1].in_flight = true;
            assert_eq!(reconcile(&d, &p, now + 30 * MS).actions, [], "one run at a time");
            let verdict = p[0].probed(ProbeKind::Liveness, false, &probes, now);
            assert_eq!(verdict.kill, n == 3);
            now += 10 * MS;
        }
        assert!(!p[0].ready);
        let plan = reconcile(&d, &p, now);
        assert_eq!(plan.actions, [Action::Signal(0, libc::SIGTERM)]);
        let State::Running { signalled, kill_at, .. } = &mut p[0].state else { panic!() };
        *signalled = Some(libc::SIGTERM);
        let at = kill_at.unwrap();
        assert_eq!(reconcile(&d, &p, now).wake_at, Some(at));
        assert_eq!(reconcile(&d, &p, at).actions, [Action::Signal(0, libc::SIGKILL)]);
        // It ends, and restarts as its policy says.
        p[0].now_ended(exited(143, t0(), at));
        assert!(matches!(reconcile(&d, &p, at).actions[..], [Action::Restart { .. }]));
    }

    #[test]
    fn readiness_waits_for_the_startup_probe_and_follows_its_own_results() {
        let mut d = desired(RestartPolicy::Always);
        let probes = Probes([Some(timing(0, 10)), None, Some(timing(0, 10))]);
        d.probes = vec![probes];
        let mut p = pod(&[], &["c"]);
        p[0].now_running(42, t0(), &probes);
        assert!(!p[0].started && !p[0].ready);
        assert_eq!(reconcile(&d, &p, t0()).actions, [Action::Probe(0, ProbeKind::Startup)]);
        p[0].probed(ProbeKind::Startup, true, &probes, t0());
        assert!(p[0].started && !p[0].ready);
        assert_eq!(reconcile(&d, &p, t0()).actions, [Action::Probe(0, ProbeKind::Readiness)]);
        p[0].probed(ProbeKind::Readiness, true, &probes, t0());
        assert!(p[0].ready);
        for _ in 0..3 {
            assert!(!p[0].probed(ProbeKind::Readiness, false, &probes, t0()).kill, "readiness never kills");
        }
        assert!(!p[0].ready && p[0].started);
    }

    #[test]
    fn a_stop_runs_the_prestop_hook_before_sigterm_and_sigkill_comes_at_the_deadline_regardless() {
        let mut d = desired(RestartPolicy::Always);
        let deadline = t0() + Duration::from_secs(30);
        d.stop_deadline = Some(deadline);
        d.pre_stop = vec![true, false];
        let mut p = pod(&[], &["hooked", "plain"]);
        p[0].state = running(t0());
        p[1].state = running(t0());
        assert_eq!(reconcile(&d, &p, t0()).actions, [Action::PreStop(0), Action::Signal(1, libc::SIGTERM)]);
        p[0].pre_stop = Hook::Running;
        assert_eq!(reconcile(&d, &p, t0()).actions, [Action::Signal(1, libc::SIGTERM)]);
        assert_eq!(
            reconcile(&d, &p, deadline).actions,
            [Action::Signal(0, libc::SIGKILL), Action::Signal(1, libc::SIGKILL)]
        );
        p[0].pre_stop = Hook::Done;
        assert_eq!(
            reconcile(&d, &p, t0()).actions,
            [Action::Signal(0, libc::SIGTERM), Action::Signal(1, libc::SIGTERM)]
        );
    }

    #[test]
    fn oom_kills_are_counted_over_runs() {
        let mut c = ContainerStatus::new("c", false, 100 * MS);
        let mut t = exited(137, t0(), t0());
        t.oom_killed = true;
        c.now_ended(t.clone());
        c.now_ended(exited(1, t0(), t0()));
        c.now_ended(t);
        assert_eq!(c.oom_kills, 2);
    }
}
