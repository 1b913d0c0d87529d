//! A run watched from outside: [`Observer`] turns the notes any subscriber of the control
//! broker sees (workers' `run_stats` and `run_result`, inspectors' `sut_stats` and
//! `fault_healed`, presence) into a [`LiveView`], the model the terminal view draws, for
//! `maestro-cli serve`'s live page. It did not start the run, so it knows no spec: the
//! run's workers are those that publish its stats, and a second is complete once every one
//! of them has published a later one (or two later seconds passed). Pure: no I/O, no clock.

use crate::faults::FaultState;
use crate::lifecycle::Step;
use crate::view::{FaultRow, LiveView};
use crate::watch::{Second, Watch, WorkerState};
use hdrhistogram::Histogram;
use maestro_protocol::{Body, Counters, Note, PeerId, Presence, PresenceStatus, Role, RunId};
use maestro_report::Percentiles;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Seconds an open second waits for a slow worker once later seconds are in.
const LATE_SECONDS: u32 = 2;

/// The run being watched.
#[derive(Debug)]
struct Watched {
    id: RunId,
    workers: Vec<PeerId>,
    done: BTreeSet<PeerId>,
    latest: BTreeMap<PeerId, u32>,
    open: BTreeMap<u32, (Counters, Histogram<u64>)>,
    /// Seconds below this are handed to the view.
    closed_below: u32,
    whole: Histogram<u64>,
    sent: u64,
    received: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        // The bounds are constant and valid; an unbounded histogram is the fallback.
        Histogram::new(3).unwrap_or_else(|e| unreachable!("{e}"))
    })
}

/// Feeds a [`LiveView`] from the notes of the runs on the control broker.
#[derive(Debug)]
pub struct Observer {
    view: Arc<LiveView>,
    names: BTreeMap<PeerId, String>,
    online: BTreeSet<PeerId>,
    run: Option<Watched>,
    /// Notes that could not be used (a histogram that does not decode, an implausible
    /// count).
    pub dropped: u64,
}

impl Observer {
    pub fn new(view: Arc<LiveView>) -> Self {
        Self {
            view,
            names: BTreeMap::new(),
            online: BTreeSet::new(),
            run: None,
            dropped: 0,
        }
    }

    pub fn view(&self) -> &Arc<LiveView> {
        &self.view
    }

    /// Workers and inspectors online now.
    pub fn online(&self) -> usize {
        self.online.len()
    }

    fn name(&self, id: &PeerId) -> String {
        self.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    /// A peer's presence changed (`None`: it left on purpose).
    pub fn presence(&mut self, id: &PeerId, presence: Option<&Presence>) {
        match presence {
            Some(p) if p.peer.role == Role::Controller => {}
            Some(p) => {
                self.names.insert(id.clone(), p.peer.name.clone());
                if p.status == PresenceStatus::Online {
                    self.online.insert(id.clone());
                } else {
                    self.online.remove(id);
                    if let Some(w) = &self.run {
                        self.view.worker(&w.id, id, WorkerState::Offline);
                    }
                }
            }
            None => {
                self.online.remove(id);
            }
        }
    }

    /// A peer's event.
    pub fn note(&mut self, note: &Note) {
        let from = &note.sender.id;
        if !self.names.contains_key(from) {
            self.names.insert(from.clone(), note.sender.name.clone());
        }
        match &note.body {
            Body::RunStats(s) => {
                if !s.plausible() {
                    self.dropped += 1;
                    return;
                }
                let Ok(response) =
                    maestro_protocol::histogram::decode(&s.histograms.response_time_us)
                else {
                    self.dropped += 1;
                    return;
                };
                self.join(&s.run, from);
                let Some(w) = self.run.as_mut() else { return };
                self.view.worker_second(&w.id, from, s);
                let second = s.second.max(w.closed_below);
                let (counters, h) = w
                    .open
                    .entry(second)
                    .or_insert_with(|| (Counters::default(), histogram()));
                counters.add(&s.counters);
                let _ = h.add(&response);
                let latest = w.latest.entry(from.clone()).or_insert(second);
                *latest = (*latest).max(second);
                self.close_seconds(false);
            }
            Body::RunResult(r) => {
                if self.run.as_ref().is_none_or(|w| w.id != r.run) {
                    return;
                }
                self.view.worker(&r.run, from, WorkerState::Done);
                let all_done = self.run.as_mut().is_some_and(|w| {
                    w.done.insert(from.clone());
                    w.workers.iter().all(|id| w.done.contains(id))
                });
                if all_done {
                    self.close_seconds(true);
                    self.view.step(&r.run, Step::Done);
                }
            }
            Body::SutStats(s) => {
                let inspector = self.name(from);
                for sample in &s.samples {
                    self.view.sut(&inspector, s.at_us.0, sample);
                }
            }
            Body::FaultHealed(f) if self.run.as_ref().is_some_and(|w| w.id == f.run) => {
                self.view.observed_fault(
                    &f.run,
                    FaultRow {
                        action: f.action.to_string(),
                        inspector: self.name(from),
                        at: Duration::ZERO,
                        duration: Duration::ZERO,
                        state: if f.error.is_some() {
                            FaultState::Failed
                        } else {
                            FaultState::Healed
                        },
                        error: f.error.clone(),
                    },
                );
            }
            _ => {}
        }
    }

    /// Makes `run` the watched run (a new one starts the view afresh) with `worker` in it.
    fn join(&mut self, run: &RunId, worker: &PeerId) {
        if self.run.as_ref().is_none_or(|w| &w.id != run) {
            self.view.observed_run_begins(run);
            self.view.step(run, Step::Running);
            self.run = Some(Watched {
                id: run.clone(),
                workers: Vec::new(),
                done: BTreeSet::new(),
                latest: BTreeMap::new(),
                open: BTreeMap::new(),
                closed_below: 0,
                whole: histogram(),
                sent: 0,
                received: 0,
            });
        }
        let name = self.name(worker);
        if let Some(w) = self.run.as_mut()
            && !w.workers.contains(worker)
        {
            w.workers.push(worker.clone());
            self.view.observed_worker(run, worker, &name);
        }
    }

    /// Hands the view every second that all the run's workers are past (or, with `all`,
    /// every open second).
    fn close_seconds(&mut self, all: bool) {
        let Some(w) = self.run.as_mut() else { return };
        let newest = w.open.keys().next_back().copied().unwrap_or(0);
        let everyone = w
            .workers
            .iter()
            .filter(|id| !w.done.contains(*id))
            .map(|id| w.latest.get(id).copied().unwrap_or(0))
            .min()
            .unwrap_or(newest);
        let below = if all {
            u32::MAX
        } else {
            everyone.max(newest.saturating_sub(LATE_SECONDS))
        };
        let ready: Vec<u32> = w.open.range(..below).map(|(s, _)| *s).collect();
        for s in ready {
            let Some((counters, h)) = w.open.remove(&s) else {
                continue;
            };
            let _ = w.whole.add(&h);
            w.sent = w.sent.saturating_add(counters.sent);
            w.received = w.received.saturating_add(counters.received);
            w.closed_below = s + 1;
            let second = Second {
                second: s,
                sent: counters.sent,
                received: counters.received,
                errors: counters.errors,
                duplicated: counters.duplicated,
                response: Percentiles::of(&h),
            };
            let in_flight = w.sent as i64 - w.received as i64;
            self.view
                .second(&w.id, &second, &Percentiles::of(&w.whole), in_flight, "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::{RunStats, Sender, UnixMicros};

    fn peer(s: &str) -> PeerId {
        PeerId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn stats(run: &RunId, from: &PeerId, second: u32, sent: u64) -> Note {
        let mut h = histogram();
        let _ = h.record(500);
        Note::new(
            Sender {
                id: from.clone(),
                role: Role::Worker,
                name: format!("name-{from}"),
            },
            Body::RunStats(RunStats {
                run: run.clone(),
                second,
                interval_start_us: UnixMicros(0),
                interval_end_us: UnixMicros(1_000_000),
                counters: Counters {
                    sent,
                    received: sent,
                    ..Counters::default()
                },
                histograms: maestro_protocol::EncodedHistograms {
                    response_time_us: maestro_protocol::histogram::encode(&h),
                    ..Default::default()
                },
                active_producers: 1,
                active_consumers: 1,
                connections: None,
            }),
            UnixMicros(0),
        )
    }

    #[test]
    fn a_second_is_shown_once_every_worker_is_past_it_and_a_new_run_starts_afresh() {
        let mut o = Observer::new(LiveView::new());
        let run = RunId::new("r1").unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (peer("w-a"), peer("w-b"));
        o.note(&stats(&run, &a, 0, 10));
        o.note(&stats(&run, &b, 0, 5));
        // Nobody is past second 0 yet.
        assert_eq!(o.view().snapshot().last, None);
        o.note(&stats(&run, &a, 1, 10));
        assert_eq!(
            o.view().snapshot().last,
            None,
            "b has not finished second 0"
        );
        o.note(&stats(&run, &b, 1, 5));
        let s = o.view().snapshot();
        assert_eq!(s.last.map(|l| (l.second, l.sent)), Some((0, 15)));
        assert_eq!(s.workers.len(), 2);
        assert_eq!(s.workers[0].name, "name-w-a");
        assert_eq!(s.sent, 15);
        assert_eq!(s.whole.p50, 500);
        // A worker that stops publishing holds a second back at most LATE_SECONDS.
        for second in 2..5 {
            o.note(&stats(&run, &a, second, 1));
        }
        assert_eq!(o.view().snapshot().last.map(|l| l.second), Some(1));
        let other = RunId::new("r2").unwrap_or_else(|e| panic!("{e}"));
        o.note(&stats(&other, &a, 0, 1));
        let s = o.view().snapshot();
        assert_eq!(s.run, Some(other));
        assert_eq!((s.sent, s.workers.len()), (0, 1));
    }
}
