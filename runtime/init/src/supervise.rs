//! The service supervisor as a state machine with no I/O: it is fed events (a child exited, a
//! readiness check passed, time went by, shutdown was asked for) and answers with actions for
//! the edge to carry out (spawn, check, signal, log). That keeps ordering, readiness gating,
//! restart backoff and shutdown order testable without processes.
//!
//! Policy:
//! - A service starts once every service it waits for (`after`, by default the one listed
//!   before it) is ready or its `ready_timeout` passed (logged; it keeps being supervised), or
//!   is missing. Services with nothing to wait for start together.
//! - A service that exits (outside shutdown) is restarted after an exponential backoff
//!   ([`Backoff`]); a service that ran at least `reset_after` starts again from the initial
//!   delay. Every restart is logged with the exit status and the delay.
//! - A service whose program is missing from the image is skipped, once, with a message.
//! - Shutdown stops services one at a time in reverse order: SIGTERM to the main process, then
//!   after `stop_timeout` SIGKILL to its whole process group.

use crate::services::ServiceSpec;
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a starting service's readiness is probed.
pub const READY_POLL: Duration = Duration::from_millis(50);
/// How long to wait for a SIGKILLed service to go before moving on.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the backoff.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Delay before restart number `failures` of a row (1-based): initial, 2x, 4x, ... capped.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Its turn has not come.
    Waiting,
    /// The program is not in the image.
    Missing,
    Running {
        pid: i32,
        since: Instant,
    },
    Backoff {
        until: Instant,
    },
    Stopping {
        pid: i32,
        deadline: Instant,
        killed: bool,
    },
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub spec: ServiceSpec,
    pub state: State,
    /// Restarts so far.
    pub restarts: u32,
    /// Failures in a row (reset by a long run).
    failures: u32,
    pub first_started: Option<Instant>,
    pub ready_at: Option<Instant>,
    next_check: Option<Instant>,
    /// The services whose readiness its first start waits for (indices into the list).
    after: Vec<usize>,
    /// Its first start was asked for.
    launched: bool,
    /// It no longer holds back the services waiting for it: ready, its ready timeout passed,
    /// or it is missing.
    settled: bool,
    /// When its first start stops waiting for its readiness.
    ready_deadline: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn(usize),
    CheckReady(usize),
    /// `group`: signal the process group (the service runs in its own session).
    Signal {
        pid: i32,
        signal: Signal,
        group: bool,
    },
    Log(String),
    /// Every service has been started (ready or timed out); emitted once.
    AllStarted,
    /// Shutdown finished: every service is stopped.
    AllStopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting,
    Up,
    Stopping { index: usize },
    Down,
}

#[derive(Debug)]
pub struct Machine {
    pub services: Vec<Service>,
    backoff: Backoff,
    phase: Phase,
}

impl Machine {
    /// `exists` tells whether a program is in the image.
    pub fn new(specs: Vec<ServiceSpec>, backoff: Backoff, exists: impl Fn(&Path) -> bool) -> Self {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let present: Vec<bool> = specs.iter().map(|s| exists(&s.program())).collect();
        // Only earlier services count (services.rs refuses others): the list order stays a
        // start order, so nothing can wait for itself. A missing service stands for what it
        // would have waited for, so skipping one never lets the next start early.
        let mut waits: Vec<Vec<usize>> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let named: Vec<usize> = match &spec.after {
                None => i.checked_sub(1).into_iter().collect(),
                Some(deps) => (0..i).filter(|&j| deps.contains(&names[j])).collect(),
            };
            let mut resolved = Vec::new();
            for d in named {
                let via: &[usize] = if present[d] { &[d] } else { &waits[d] };
                for &r in via {
                    if !resolved.contains(&r) {
                        resolved.push(r);
                    }
                }
            }
            waits.push(resolved);
        }
        let services = specs
            .into_iter()
            .zip(waits)
            .zip(present)
            .map(|((spec, after), present)| {
                let state = if present {
                    State::Waiting
                } else {
                    State::Missing
                };
                Service {
                    settled: state == State::Missing,
                    state,
                    spec,
                    restarts: 0,
                    failures: 0,
                    first_started: None,
                    ready_at: None,
                    next_check: None,
                    after,
                    launched: false,
                    ready_deadline: None,
                }
            })
            .collect();
        Machine {
            services,
            backoff,
            phase: Phase::Idle,
        }
    }

    pub fn is_down(&self) -> bool {
        self.phase == Phase::Down
    }

    pub fn is_stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. } | Phase::Down)
    }

    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for s in &self.services {
            if s.state == State::Missing {
                out.push(Action::Log(format!(
                    "{}: {} is not in the image; skipped",
                    s.spec.name, s.spec.command[0]
                )));
            }
        }
        self.phase = Phase::Starting;
        self.launch(now, &mut out);
        out
    }

    /// Starts every service whose wait is over, or finishes the start phase once none holds
    /// back the others.
    fn launch(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.phase != Phase::Starting {
            return;
        }
        for i in 0..self.services.len() {
            let s = &self.services[i];
            if s.launched
                || s.state != State::Waiting
                || !s.after.iter().all(|&d| self.services[d].settled)
            {
                continue;
            }
            let s = &mut self.services[i];
            s.launched = true;
            s.ready_deadline = Some(now + s.spec.ready_timeout());
            out.push(Action::Spawn(i));
        }
        if self.services.iter().all(|s| s.settled) {
            self.phase = Phase::Up;
            out.push(Action::AllStarted);
        }
    }

    /// The edge started service `index` as `pid`.
    pub fn spawned(&mut self, index: usize, pid: i32, now: Instant) -> Vec<Action> {
        let s = &mut self.services[index];
        s.state = State::Running { pid, since: now };
        s.first_started.get_or_insert(now);
        s.next_check = Some(now);
        let mut out = vec![Action::Log(format!(
            "{}: started (pid {pid}){}",
            s.spec.name,
            if s.restarts > 0 {
                format!(", restart #{}", s.restarts)
            } else {
                String::new()
            }
        ))];
        if self.is_starting(index) {
            out.push(Action::CheckReady(index));
        }
        out
    }

    /// The edge could not start service `index` (fork or exec failed): handled like an exit.
    pub fn spawn_failed(&mut self, index: usize, error: &str, now: Instant) -> Vec<Action> {
        self.services[index].state = State::Running {
            pid: -1,
            since: now,
        };
        self.exited_index(index, &format!("could not start: {error}"), now)
    }

    /// Whether `index` is in its first start, its readiness still awaited.
    fn is_starting(&self, index: usize) -> bool {
        self.phase == Phase::Starting && !self.services[index].settled
    }

    /// A child exited. Returns `None` when `pid` is not a service (an orphan that was reaped).
    pub fn exited(&mut self, pid: i32, status: &str, now: Instant) -> Option<Vec<Action>> {
        let index = self.services.iter().position(|s| {
            matches!(s.state, State::Running { pid: p, .. } | State::Stopping { pid: p, .. } if p == pid)
        })?;
        Some(self.exited_index(index, status, now))
    }

    fn exited_index(&mut self, index: usize, status: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let backoff = self.backoff;
        let stopping = self.is_stopping();
        let s = &mut self.services[index];
        let ran = match s.state {
            State::Running { since, .. }
            | State::Stopping {
                deadline: since, ..
            } => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        if stopping {
            s.state = State::Stopped;
            out.push(Action::Log(format!("{}: stopped ({status})", s.spec.name)));
            if matches!(self.phase, Phase::Stopping { index: i } if i == index) {
                self.stop_from(index.checked_sub(1), now, &mut out);
            }
            return out;
        }
        s.failures = if ran >= backoff.reset_after {
            1
        } else {
            s.failures + 1
        };
        s.restarts += 1;
        let delay = backoff.delay(s.failures);
        s.state = State::Backoff { until: now + delay };
        out.push(Action::Log(format!(
            "{}: exited ({status}) after {:.1} s; restart #{} in {:.1} s",
            s.spec.name,
            ran.as_secs_f64(),
            s.restarts,
            delay.as_secs_f64()
        )));
        out
    }

    /// The readiness check of `index` passed.
    pub fn ready(&mut self, index: usize, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let s = &mut self.services[index];
        s.next_check = None;
        if s.ready_at.is_none() {
            s.ready_at = Some(now);
            let took = s
                .first_started
                .map(|t| now.saturating_duration_since(t).as_secs_f64())
                .unwrap_or(0.0);
            out.push(Action::Log(format!(
                "{}: ready after {took:.2} s",
                s.spec.name
            )));
        }
        if self.is_starting(index) {
            self.services[index].settled = true;
            self.launch(now, &mut out);
        }
        out
    }

    /// The readiness check of `index` did not pass yet.
    pub fn not_ready(&mut self, index: usize, now: Instant) {
        self.services[index].next_check = Some(now + READY_POLL);
    }

    /// Time went by: restarts due, readiness probes due, start and stop timeouts.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.is_stopping() {
            for (i, s) in self.services.iter().enumerate() {
                if matches!(s.state, State::Backoff { until } if until <= now) {
                    out.push(Action::Spawn(i));
                }
            }
        }
        match self.phase {
            Phase::Starting => {
                for (index, s) in self.services.iter_mut().enumerate() {
                    if !s.launched || s.settled {
                        continue;
                    }
                    if s.ready_deadline.is_some_and(|d| now >= d) {
                        out.push(Action::Log(format!(
                            "{}: not ready after {} s; starting what waits for it anyway",
                            s.spec.name, s.spec.ready_timeout_seconds
                        )));
                        s.next_check = None;
                        s.settled = true;
                    } else if matches!(s.state, State::Running { .. })
                        && s.next_check.is_some_and(|t| t <= now)
                    {
                        s.next_check = None;
                        out.push(Action::CheckReady(index));
                    }
                }
                self.launch(now, &mut out);
            }
            Phase::Stopping { index } => {
                let s = &mut self.services[index];
                if let State::Stopping {
                    pid,
                    deadline,
                    killed,
                } = s.state
                {
                    if now >= deadline && !killed {
                        out.push(Action::Log(format!(
                            "{}: still running {} s after SIGTERM; killing it",
                            s.spec.name, s.spec.stop_timeout_seconds
                        )));
                        out.push(Action::Signal {
                            pid,
                            signal: Signal::SIGKILL,
                            group: true,
                        });
                        s.state = State::Stopping {
                            pid,
                            deadline: now + KILL_GRACE,
                            killed: true,
                        };
                    } else if now >= deadline {
                        out.push(Action::Log(format!(
                            "{}: pid {pid} survived SIGKILL for {} s; leaving it",
                            s.spec.name,
                            KILL_GRACE.as_secs()
                        )));
                        s.state = State::Stopped;
                        self.stop_from(index.checked_sub(1), now, &mut out);
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// Stops every service, last first.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_stopping() {
            return out;
        }
        for s in &mut self.services {
            if matches!(s.state, State::Waiting | State::Backoff { .. }) {
                s.state = State::Stopped;
            }
        }
        self.stop_from(self.services.len().checked_sub(1), now, &mut out);
        out
    }

    fn stop_from(&mut self, mut index: Option<usize>, now: Instant, out: &mut Vec<Action>) {
        while let Some(i) = index {
            let s = &mut self.services[i];
            if let State::Running { pid, .. } = s.state {
                out.push(Action::Log(format!("{}: stopping (SIGTERM)", s.spec.name)));
                out.push(Action::Signal {
                    pid,
                    signal: Signal::SIGTERM,
                    group: false,
                });
                s.state = State::Stopping {
                    pid,
                    deadline: now + s.spec.stop_timeout(),
                    killed: false,
                };
                self.phase = Phase::Stopping { index: i };
                return;
            }
            index = i.checked_sub(1);
        }
        self.phase = Phase::Down;
        out.push(Action::AllStopped);
    }

    /// When the machine next needs a `tick`.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut times = Vec::new();
        match self.phase {
            Phase::Starting => {
                for s in self.services.iter().filter(|s| s.launched && !s.settled) {
                    times.extend(s.ready_deadline);
                    if matches!(s.state, State::Running { .. }) {
                        times.extend(s.next_check);
                    }
                }
            }
            Phase::Stopping { index } => {
                if let State::Stopping { deadline, .. } = self.services[index].state {
                    times.push(deadline);
                }
            }
            _ => {}
        }
        if !self.is_stopping() {
            for s in &self.services {
                if let State::Backoff { until } = s.state {
                    times.push(until);
                }
            }
        }
        times.into_iter().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::Readiness;

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            command: vec![format!("/bin/{name}")],
            env: Default::default(),
            ready: Readiness::Path(format!("/run/{name}").into()),
            ready_timeout_seconds: 10,
            stop_timeout_seconds: 3,
            after: None,
        }
    }

    fn machine(names: &[&str], missing: &[&str]) -> Machine {
        let missing: Vec<String> = missing.iter().map(|m| format!("/bin/{m}")).collect();
        Machine::new(
            names.iter().map(|n| spec(n)).collect(),
            Backoff::default(),
            move |p| !missing.iter().any(|m| Path::new(m) == p),
        )
    }

    fn spawns(actions: &[Action]) -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn(i) => Some(*i),
                _ => None,
            })
            .collect()
    }

    fn logs(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Log(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        let secs: Vec<u64> = (1..=9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.delay(u32::MAX), b.max);
    }

    #[test]
    fn each_service_waits_for_the_previous_ones_readiness() {
        let t0 = Instant::now();
        let mut m = machine(&["containerd", "dockerd", "guard"], &[]);
        assert_eq!(spawns(&m.start(t0)), vec![0]);
        let a = m.spawned(0, 100, t0);
        assert!(a.contains(&Action::CheckReady(0)));
        m.not_ready(0, t0);
        // Not ready yet: nothing else starts, the next probe is due after READY_POLL.
        assert!(spawns(&m.tick(t0 + READY_POLL / 2)).is_empty());
        assert_eq!(m.next_deadline(), Some(t0 + READY_POLL));
        assert_eq!(m.tick(t0 + READY_POLL), vec![Action::CheckReady(0)]);
        let a = m.ready(0, t0 + Duration::from_secs(1));
        assert_eq!(spawns(&a), vec![1]);
        assert!(logs(&a)[0].contains("containerd: ready after 1.00 s"));
        m.spawned(1, 101, t0 + Duration::from_secs(1));
        let a = m.ready(1, t0 + Duration::from_secs(2));
        assert_eq!(spawns(&a), vec![2]);
        m.spawned(2, 102, t0 + Duration::from_secs(2));
        let a = m.ready(2, t0 + Duration::from_secs(2));
        assert!(a.contains(&Action::AllStarted));
    }

    fn waiting(name: &str, after: &[&str]) -> ServiceSpec {
        ServiceSpec {
            after: Some(after.iter().map(|a| a.to_string()).collect()),
            ..spec(name)
        }
    }

    #[test]
    fn services_start_as_soon_as_what_they_wait_for_is_ready() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let specs = vec![
            spec("supervisor"),
            spec("views"),
            waiting("containerd", &[]),
            waiting("dockerd", &["supervisor", "views"]),
            spec("guard"),
        ];
        let mut m = Machine::new(specs, Backoff::default(), |_| true);
        assert_eq!(
            spawns(&m.start(t0)),
            vec![0, 2],
            "containerd waits for nothing"
        );
        assert_eq!(
            m.spawned(0, 10, t0),
            vec![
                Action::Log("supervisor: started (pid 10)".into()),
                Action::CheckReady(0)
            ]
        );
        assert!(m.spawned(2, 12, t0).contains(&Action::CheckReady(2)));
        m.not_ready(0, t0);
        m.not_ready(2, t0);
        assert_eq!(m.next_deadline(), Some(t0 + READY_POLL));
        assert_eq!(
            m.tick(t0 + READY_POLL),
            vec![Action::CheckReady(0), Action::CheckReady(2)],
            "each starting service is probed"
        );
        assert_eq!(spawns(&m.ready(0, at(100))), vec![1]);
        m.spawned(1, 11, at(100));
        // dockerd waits for both vetting services, not for containerd.
        assert_eq!(spawns(&m.ready(1, at(200))), vec![3]);
        m.spawned(3, 13, at(200));
        let a = m.ready(3, at(900));
        assert_eq!(spawns(&a), vec![4]);
        m.spawned(4, 14, at(900));
        let a = m.ready(4, at(1000));
        assert!(
            !a.contains(&Action::AllStarted),
            "containerd is not ready yet"
        );
        let a = m.ready(2, at(1100));
        assert!(logs(&a)[0].contains("containerd: ready after 1.10 s"));
        assert!(a.contains(&Action::AllStarted));
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn a_timed_out_or_missing_dependency_releases_what_waits_for_it() {
        let t0 = Instant::now();
        let specs = vec![
            spec("supervisor"),
            spec("views"),
            waiting("containerd", &[]),
            waiting("dockerd", &["views"]),
        ];
        // views is missing: dockerd waits for what views would have waited for.
        let mut m = Machine::new(specs.clone(), Backoff::default(), |p| {
            p != Path::new("/bin/views")
        });
        assert_eq!(spawns(&m.start(t0)), vec![0, 2]);
        m.spawned(0, 10, t0);
        m.spawned(2, 12, t0);
        assert_eq!(spawns(&m.ready(0, t0)), vec![3]);
        // A supervisor that never answers holds dockerd back for its ready timeout only.
        let mut m = Machine::new(specs, Backoff::default(), |_| true);
        m.start(t0);
        m.spawned(0, 10, t0);
        m.spawned(2, 12, t0);
        m.not_ready(0, t0);
        m.not_ready(2, t0);
        assert_eq!(
            m.ready(2, t0 + Duration::from_secs(1)),
            vec![Action::Log("containerd: ready after 1.00 s".into())]
        );
        let a = m.tick(t0 + Duration::from_secs(10));
        assert!(logs(&a)[0]
            .contains("supervisor: not ready after 10 s; starting what waits for it anyway"));
        assert_eq!(spawns(&a), vec![1]);
    }

    #[test]
    fn a_ready_timeout_moves_on_and_missing_programs_are_skipped() {
        let t0 = Instant::now();
        let mut m = machine(&["a", "supervisor", "b"], &["supervisor"]);
        let a = m.start(t0);
        assert!(logs(&a)[0].contains("supervisor: /bin/supervisor is not in the image; skipped"));
        m.spawned(0, 10, t0);
        let a = m.tick(t0 + Duration::from_secs(10));
        assert!(logs(&a)[0].contains("a: not ready after 10 s"));
        assert_eq!(spawns(&a), vec![2], "the missing service is skipped");
        m.spawned(2, 12, t0 + Duration::from_secs(10));
        assert!(m
            .ready(2, t0 + Duration::from_secs(11))
            .contains(&Action::AllStarted));
        // Late readiness of the first one is still recorded, without restarting the sequence.
        let a = m.ready(0, t0 + Duration::from_secs(12));
        assert!(spawns(&a).is_empty() && !a.contains(&Action::AllStarted));
    }

    #[test]
    fn a_crashing_service_restarts_with_growing_delays_then_resets() {
        let t0 = Instant::now();
        let mut m = machine(&["d"], &[]);
        m.start(t0);
        m.spawned(0, 10, t0);
        m.ready(0, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        let mut pid = 10;
        for _ in 0..4 {
            now += Duration::from_millis(100);
            let a = m.exited(pid, "exit status 1", now).unwrap();
            let State::Backoff { until } = m.services[0].state else {
                panic!()
            };
            delays.push((until - now).as_secs());
            assert!(logs(&a)[0].contains("d: exited (exit status 1)"));
            assert!(spawns(&m.tick(until - Duration::from_millis(1))).is_empty());
            assert_eq!(m.next_deadline(), Some(until));
            now = until;
            assert_eq!(spawns(&m.tick(now)), vec![0]);
            pid += 1;
            let a = m.spawned(0, pid, now);
            assert!(logs(&a)[0].contains(&format!("restart #{}", delays.len())));
        }
        assert_eq!(delays, vec![1, 2, 4, 8]);
        // A long run resets the backoff.
        now += Backoff::default().reset_after;
        m.exited(pid, "signal 9", now).unwrap();
        let State::Backoff { until } = m.services[0].state else {
            panic!()
        };
        assert_eq!(until - now, Duration::from_secs(1));
        assert_eq!(m.services[0].restarts, 5);
    }

    #[test]
    fn orphans_are_not_services() {
        let t0 = Instant::now();
        let mut m = machine(&["a"], &[]);
        m.start(t0);
        m.spawned(0, 10, t0);
        assert_eq!(m.exited(999, "exit status 0", t0), None);
    }

    #[test]
    fn shutdown_stops_in_reverse_order_with_kill_after_timeout() {
        let t0 = Instant::now();
        let mut m = machine(&["containerd", "dockerd", "guard"], &[]);
        m.start(t0);
        m.spawned(0, 10, t0);
        m.ready(0, t0);
        m.spawned(1, 11, t0);
        m.ready(1, t0);
        m.spawned(2, 12, t0);
        m.ready(2, t0);
        let a = m.shutdown(t0);
        assert!(a.contains(&Action::Signal {
            pid: 12,
            signal: Signal::SIGTERM,
            group: false
        }));
        assert!(
            m.shutdown(t0).is_empty(),
            "a second request changes nothing"
        );
        // guard exits on SIGTERM; dockerd is next.
        let a = m
            .exited(12, "exit status 0", t0 + Duration::from_secs(1))
            .unwrap();
        assert!(a.contains(&Action::Signal {
            pid: 11,
            signal: Signal::SIGTERM,
            group: false
        }));
        // dockerd ignores SIGTERM: after its stop timeout (3 s) its group is killed.
        assert!(m.tick(t0 + Duration::from_secs(3)).is_empty());
        let a = m.tick(t0 + Duration::from_secs(4));
        assert!(a.contains(&Action::Signal {
            pid: 11,
            signal: Signal::SIGKILL,
            group: true
        }));
        let a = m
            .exited(11, "signal 9", t0 + Duration::from_secs(4))
            .unwrap();
        assert!(a.contains(&Action::Signal {
            pid: 10,
            signal: Signal::SIGTERM,
            group: false
        }));
        let a = m
            .exited(10, "exit status 0", t0 + Duration::from_secs(5))
            .unwrap();
        assert!(a.contains(&Action::AllStopped));
        assert!(m.is_down());
        // Nothing is restarted while stopping.
        assert!(m.tick(t0 + Duration::from_secs(100)).is_empty());
    }

    #[test]
    fn shutdown_during_start_or_backoff_stops_what_runs() {
        let t0 = Instant::now();
        let mut m = machine(&["a", "b"], &[]);
        m.start(t0);
        m.spawned(0, 10, t0);
        m.exited(10, "exit status 1", t0).unwrap();
        // a is in backoff, b never started: nothing to signal.
        let a = m.shutdown(t0);
        assert_eq!(a, vec![Action::AllStopped]);
        let mut m = machine(&["a", "b"], &[]);
        m.start(t0);
        m.spawned(0, 10, t0);
        let a = m.shutdown(t0);
        assert!(a.contains(&Action::Signal {
            pid: 10,
            signal: Signal::SIGTERM,
            group: false
        }));
        // A service that ignores SIGKILL (stuck in the kernel) does not hang shutdown forever.
        m.tick(t0 + Duration::from_secs(3));
        let a = m.tick(t0 + Duration::from_secs(3) + KILL_GRACE);
        assert!(logs(&a)[0].contains("survived SIGKILL"));
        assert!(a.contains(&Action::AllStopped));
    }
}
