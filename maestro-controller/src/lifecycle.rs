//! A run's lifecycle on the controller as a pure state machine: no I/O, no clock. The shell
//! ([`crate::run`]) turns notes, presence changes, deadlines and Ctrl-C into [`Input`]s,
//! and carries out the [`Action`]s it gets back (send configure, start or stop; finish).
//!
//! ```text
//! Configuring --every participant configured--> Starting --every answer--> Running
//!      |  (an error, a timeout, Ctrl-C: Release + Failed)      |  (Ctrl-C: interrupted)
//!      v                                                       v
//!   Failed                    Running --producers done | deadline | Ctrl-C--> Collecting
//!                             Collecting --every live worker's result | deadline--> Done
//! ```
//!
//! A worker that goes offline is never waited for: the run goes on without it and is
//! degraded, with the reason.

use maestro_protocol::{Body, ErrorCode, PeerId, RunResult};
use std::collections::{BTreeMap, BTreeSet};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `configure` sent; waiting for every participant to be connected to the SUT.
    Configuring,
    /// `start` sent; waiting for every participant to acknowledge it.
    Starting,
    /// Load is on; waiting for the producers to finish.
    Running,
    /// `stop` sent; waiting for every live participant's result.
    Collecting,
    /// Every result is in (or the collect deadline passed).
    Done,
    /// The run never started.
    Failed,
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A worker could not reach the SUT (the first reason).
    Sut(String),
    /// A worker refused the spec.
    Spec(String),
    /// Workers that did not configure, with why.
    Workers(Vec<String>),
    /// Ctrl-C (or SIGTERM) before the start.
    Interrupted,
}

/// What happened, as the machine sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A participant answered the current request.
    Replied(PeerId, Box<Body>),
    /// A participant went offline (its last will, or its presence was cleared).
    Offline(PeerId),
    /// A participant's stats: how many of its producers are still sending.
    ActiveProducers(PeerId, u32),
    /// A participant's result.
    Result(PeerId, Box<RunResult>),
    /// The current step's deadline passed.
    Deadline,
    /// Ctrl-C or SIGTERM.
    Interrupt,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `configure` to every participant (their shares).
    Configure,
    /// Send `start` to every participant.
    Start,
    /// Send `stop` to these participants.
    Stop(Vec<PeerId>),
    /// The run is over; build the summary from [`Run`]'s results.
    Finish,
    /// The run did not start: release the participants (`stop`), then report this.
    Fail(Failure),
}

/// The run as the controller tracks it.
#[derive(Debug, Clone)]
pub struct Run {
    step: Step,
    names: BTreeMap<PeerId, String>,
    /// Participants with producers.
    producing: BTreeSet<PeerId>,
    /// Participants still connected.
    live: BTreeSet<PeerId>,
    /// Participants whose answer to the current request has not come.
    pending: BTreeSet<PeerId>,
    /// Active producers per participant, from its latest stats.
    active: BTreeMap<PeerId, u32>,
    results: BTreeMap<PeerId, RunResult>,
    problems: Vec<String>,
    sut_problem: Option<String>,
    spec_problem: Option<String>,
    degraded: Vec<String>,
    interrupted: bool,
    stop_reason: Option<&'static str>,
}

impl Run {
    /// A run over `participants` (id, name, has producers); returns the first action.
    pub fn new(participants: &[(PeerId, String, bool)]) -> (Self, Action) {
        let ids: BTreeSet<PeerId> = participants.iter().map(|p| p.0.clone()).collect();
        let run = Run {
            step: Step::Configuring,
            names: participants
                .iter()
                .map(|p| (p.0.clone(), p.1.clone()))
                .collect(),
            producing: participants
                .iter()
                .filter(|p| p.2)
                .map(|p| p.0.clone())
                .collect(),
            live: ids.clone(),
            pending: ids,
            active: BTreeMap::new(),
            results: BTreeMap::new(),
            problems: Vec::new(),
            sut_problem: None,
            spec_problem: None,
            degraded: Vec::new(),
            interrupted: false,
            stop_reason: None,
        };
        (run, Action::Configure)
    }

    pub fn step(&self) -> Step {
        self.step
    }

    /// Participants still connected.
    pub fn live(&self) -> impl Iterator<Item = &PeerId> {
        self.live.iter()
    }

    pub fn is_live(&self, id: &PeerId) -> bool {
        self.live.contains(id)
    }

    /// Why the run is degraded (empty when it is not).
    pub fn degraded(&self) -> &[String] {
        &self.degraded
    }

    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// Why the producers were stopped.
    pub fn stop_reason(&self) -> Option<&'static str> {
        self.stop_reason
    }

    /// The results, once [`Action::Finish`] was returned.
    pub fn take_results(&mut self) -> BTreeMap<PeerId, RunResult> {
        std::mem::take(&mut self.results)
    }

    fn name(&self, id: &PeerId) -> String {
        self.names
            .get(id)
            .map_or_else(|| id.to_string(), String::clone)
    }

    /// Takes one input; returns what to do (nothing, mostly).
    pub fn on(&mut self, input: Input) -> Option<Action> {
        match self.step {
            Step::Configuring => self.configuring(input),
            Step::Starting => self.starting(input),
            Step::Running => self.running(input),
            Step::Collecting => self.collecting(input),
            Step::Done | Step::Failed => None,
        }
    }

    fn configuring(&mut self, input: Input) -> Option<Action> {
        match input {
            Input::Replied(id, body) if self.pending.remove(&id) => match *body {
                Body::Configured(_) => {}
                Body::Error(e) if e.code == ErrorCode::SutUnreachable => {
                    self.sut_problem.get_or_insert(e.message);
                }
                Body::Error(e) if e.code == ErrorCode::InvalidSpec => {
                    self.spec_problem.get_or_insert(e.message);
                }
                Body::Error(e) => {
                    self.problems
                        .push(format!("{}: {:?}: {}", self.name(&id), e.code, e.message))
                }
                other => {
                    self.problems
                        .push(format!("{}: unexpected {}", self.name(&id), other.kind()))
                }
            },
            Input::Offline(id) if self.live.remove(&id) => {
                self.pending.remove(&id);
                self.problems.push(format!(
                    "{}: disconnected while configuring",
                    self.name(&id)
                ));
            }
            Input::Deadline => {
                for id in std::mem::take(&mut self.pending) {
                    self.problems.push(format!(
                        "{}: no answer to configure in time",
                        self.name(&id)
                    ));
                }
            }
            Input::Interrupt => {
                self.step = Step::Failed;
                return Some(Action::Fail(Failure::Interrupted));
            }
            _ => return None,
        }
        if !self.pending.is_empty() {
            return None;
        }
        let failure = if let Some(s) = self.spec_problem.take() {
            Some(Failure::Spec(s))
        } else if let Some(s) = self.sut_problem.take() {
            Some(Failure::Sut(s))
        } else if !self.problems.is_empty() {
            Some(Failure::Workers(std::mem::take(&mut self.problems)))
        } else {
            None
        };
        match failure {
            Some(f) => {
                self.step = Step::Failed;
                Some(Action::Fail(f))
            }
            None => {
                self.step = Step::Starting;
                self.pending = self.live.clone();
                Some(Action::Start)
            }
        }
    }

    fn starting(&mut self, input: Input) -> Option<Action> {
        match input {
            Input::Replied(id, body) if self.pending.remove(&id) => {
                if !matches!(*body, Body::Started(_)) {
                    self.degraded
                        .push(format!("worker {} ({id}) did not start", self.name(&id)));
                }
            }
            Input::Offline(id) => self.offline(id, "while starting"),
            Input::Deadline => {
                for id in std::mem::take(&mut self.pending) {
                    self.degraded
                        .push(format!("worker {} ({id}) did not start", self.name(&id)));
                }
            }
            Input::Interrupt => {
                self.interrupted = true;
                return Some(self.collect("interrupted"));
            }
            Input::ActiveProducers(id, n) => {
                self.active.insert(id, n);
            }
            Input::Result(id, r) => {
                self.results.insert(id, *r);
            }
            Input::Replied(..) => {}
        }
        if self.pending.is_empty() {
            self.step = Step::Running;
            return self.check_done();
        }
        None
    }

    fn running(&mut self, input: Input) -> Option<Action> {
        match input {
            Input::ActiveProducers(id, n) => {
                self.active.insert(id, n);
            }
            Input::Offline(id) => self.offline(id, "during the run"),
            Input::Result(id, r) => {
                // A worker publishes its result once all its producers are done: that
                // says so even when its last stats note (QoS 0) was lost, as happened to a
                // worker with producers only, whose last second is its last note.
                self.active.insert(id.clone(), 0);
                self.results.insert(id, *r);
            }
            Input::Deadline => {
                self.degraded
                    .push("producers still sending after the planned end".into());
                return Some(self.collect("deadline"));
            }
            Input::Interrupt => {
                self.interrupted = true;
                return Some(self.collect("interrupted"));
            }
            Input::Replied(..) => {}
        }
        self.check_done()
    }

    /// Every live producing participant reported no active producer.
    fn check_done(&mut self) -> Option<Action> {
        let producing = self
            .producing
            .iter()
            .filter(|id| self.live.contains(*id))
            .any(|id| self.active.get(id).is_none_or(|a| *a > 0));
        (!producing).then(|| self.collect("every producer is done"))
    }

    fn collect(&mut self, reason: &'static str) -> Action {
        self.step = Step::Collecting;
        self.stop_reason = Some(reason);
        let live: Vec<PeerId> = self.live.iter().cloned().collect();
        if self.waiting().next().is_none() {
            // Everything is in already (every worker reported before the stop).
            self.step = Step::Done;
            return Action::Finish;
        }
        Action::Stop(live)
    }

    fn waiting(&self) -> impl Iterator<Item = &PeerId> {
        self.live
            .iter()
            .filter(|id| !self.results.contains_key(*id))
    }

    fn collecting(&mut self, input: Input) -> Option<Action> {
        match input {
            Input::Result(id, r) => {
                self.results.insert(id, *r);
            }
            Input::Offline(id) => self.offline(id, "before sending its result"),
            Input::Deadline => {
                self.step = Step::Done;
                return Some(Action::Finish);
            }
            // A second Ctrl-C is the shell's business (exit at once).
            Input::Interrupt | Input::ActiveProducers(..) | Input::Replied(..) => {}
        }
        if self.waiting().next().is_none() {
            self.step = Step::Done;
            return Some(Action::Finish);
        }
        None
    }

    fn offline(&mut self, id: PeerId, when: &str) {
        if self.live.remove(&id) {
            self.pending.remove(&id);
            self.degraded.push(format!(
                "worker {} ({id}) disconnected {when}",
                self.name(&id)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::{Configured, ErrorNote, RunId, Started};

    fn id(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    fn run_id() -> RunId {
        RunId::new("r").unwrap()
    }

    fn configured() -> Box<Body> {
        Box::new(Body::Configured(Configured { run: run_id() }))
    }

    fn started() -> Box<Body> {
        Box::new(Body::Started(Started { run: run_id() }))
    }

    fn result(w: &str) -> Box<RunResult> {
        Box::new(RunResult {
            run: run_id(),
            worker: id(w),
            counters: Default::default(),
            histograms: Default::default(),
            sent: vec![],
            deliveries: vec![],
            consumers: vec![],
            errors: vec![],
            tls_handshake_us: None,
            connect_us: None,
            subscribe_us: None,
            connections: None,
            segments: None,
            data_plane: None,
            part: None,
        })
    }

    /// Two workers: a producing one and a consuming one.
    fn two() -> Run {
        let (run, first) = Run::new(&[(id("a"), "wa".into(), true), (id("b"), "wb".into(), false)]);
        assert_eq!(first, Action::Configure);
        run
    }

    fn running() -> Run {
        let mut r = two();
        assert_eq!(r.on(Input::Replied(id("a"), configured())), None);
        assert_eq!(
            r.on(Input::Replied(id("b"), configured())),
            Some(Action::Start)
        );
        assert_eq!(r.on(Input::Replied(id("a"), started())), None);
        assert_eq!(r.on(Input::Replied(id("b"), started())), None);
        assert_eq!(r.step(), Step::Running);
        r
    }

    #[test]
    fn a_result_says_its_workers_producers_are_done_even_without_a_last_stats_note() {
        let mut r = running();
        assert_eq!(r.on(Input::ActiveProducers(id("a"), 2)), None);
        // Worker a's last stats note (active 0, QoS 0) was lost; its result came.
        assert_eq!(
            r.on(Input::Result(id("a"), result("a"))),
            Some(Action::Stop(vec![id("a"), id("b")]))
        );
        assert_eq!(r.stop_reason(), Some("every producer is done"));
        assert!(r.degraded().is_empty());
    }

    #[test]
    fn a_run_goes_configure_start_run_collect_done() {
        let mut r = running();
        // The consumer's worker says it has no producers: not the producing one.
        assert_eq!(r.on(Input::ActiveProducers(id("b"), 0)), None);
        assert_eq!(r.on(Input::ActiveProducers(id("a"), 1)), None);
        assert_eq!(
            r.on(Input::ActiveProducers(id("a"), 0)),
            Some(Action::Stop(vec![id("a"), id("b")]))
        );
        assert_eq!(r.stop_reason(), Some("every producer is done"));
        assert_eq!(r.on(Input::Result(id("a"), result("a"))), None);
        assert_eq!(
            r.on(Input::Result(id("b"), result("b"))),
            Some(Action::Finish)
        );
        assert_eq!(r.step(), Step::Done);
        assert!(r.degraded().is_empty());
        assert_eq!(r.take_results().len(), 2);
    }

    #[test]
    fn configure_failures_say_why_and_the_sut_wins_over_others() {
        let mut r = two();
        let sut = Box::new(Body::Error(ErrorNote {
            code: ErrorCode::SutUnreachable,
            message: "connection refused".into(),
        }));
        assert_eq!(r.on(Input::Replied(id("a"), sut)), None);
        assert_eq!(
            r.on(Input::Deadline),
            Some(Action::Fail(Failure::Sut("connection refused".into())))
        );
        assert_eq!(r.step(), Step::Failed);
        assert_eq!(
            r.on(Input::Replied(id("b"), configured())),
            None,
            "failed is final"
        );

        let mut r = two();
        assert_eq!(r.on(Input::Replied(id("a"), configured())), None);
        match r.on(Input::Deadline) {
            Some(Action::Fail(Failure::Workers(w))) => {
                assert_eq!(w, ["wb: no answer to configure in time"]);
            }
            other => panic!("{other:?}"),
        }

        let mut r = two();
        let bad = Box::new(Body::Error(ErrorNote {
            code: ErrorCode::InvalidSpec,
            message: "rate".into(),
        }));
        assert_eq!(r.on(Input::Replied(id("b"), bad)), None);
        assert_eq!(
            r.on(Input::Replied(id("a"), configured())),
            Some(Action::Fail(Failure::Spec("rate".into())))
        );
    }

    #[test]
    fn ctrl_c_before_the_start_fails_and_after_it_collects() {
        let mut r = two();
        assert_eq!(
            r.on(Input::Interrupt),
            Some(Action::Fail(Failure::Interrupted))
        );
        let mut r = running();
        assert_eq!(
            r.on(Input::Interrupt),
            Some(Action::Stop(vec![id("a"), id("b")]))
        );
        assert!(r.interrupted());
        assert_eq!(r.step(), Step::Collecting);
    }

    #[test]
    fn an_offline_worker_is_not_waited_for_and_degrades_the_run() {
        let mut r = running();
        assert_eq!(r.on(Input::ActiveProducers(id("a"), 2)), None);
        // The only producing worker dies: nobody is producing any more.
        assert_eq!(
            r.on(Input::Offline(id("a"))),
            Some(Action::Stop(vec![id("b")]))
        );
        assert_eq!(
            r.on(Input::Result(id("b"), result("b"))),
            Some(Action::Finish)
        );
        assert_eq!(r.degraded(), ["worker wa (a) disconnected during the run"]);
        // Offline twice is reported once.
        assert_eq!(r.on(Input::Offline(id("a"))), None);
        assert_eq!(r.degraded().len(), 1);
    }

    #[test]
    fn deadlines_end_each_waiting_step() {
        let mut r = two();
        r.on(Input::Replied(id("a"), configured()));
        r.on(Input::Replied(id("b"), configured()));
        r.on(Input::Replied(id("a"), started()));
        // b never acknowledges the start: the run goes on, degraded.
        assert_eq!(r.on(Input::Deadline), None);
        assert_eq!(r.step(), Step::Running);
        assert_eq!(r.degraded(), ["worker wb (b) did not start"]);
        // Producers still busy at the run's deadline: stop anyway, degraded.
        assert_eq!(
            r.on(Input::Deadline),
            Some(Action::Stop(vec![id("a"), id("b")]))
        );
        assert_eq!(r.stop_reason(), Some("deadline"));
        // A worker whose result never comes: the collect deadline finishes the run.
        r.on(Input::Result(id("a"), result("a")));
        assert_eq!(r.on(Input::Deadline), Some(Action::Finish));
        assert_eq!(r.take_results().len(), 1);
    }

    #[test]
    fn results_that_arrive_before_the_stop_are_kept() {
        let mut r = running();
        r.on(Input::Result(id("b"), result("b")));
        // Both reported: a result says its producers are done, so finishing needs no
        // stop round (and no last stats note).
        assert_eq!(
            r.on(Input::Result(id("a"), result("a"))),
            Some(Action::Finish)
        );
    }
}
