//! Faults in a run: which inspector runs each (it must have declared the action), the
//! marks they cut the run into, each fault's record as a small state machine (planned,
//! requested, injected, healed, or failed), and the numbers around each fault.

use crate::run::Inspector;
use maestro_protocol::{ActionName, ConsumerPlan, FaultHealed, Injected, PeerId, RunResult, fault};
use maestro_report::Percentiles;
use maestro_report::sut::{FaultSummary, WindowStats};
use maestro_report::timeseries::SecondRow;
use std::collections::BTreeMap;
use std::time::Duration;

/// A fault as a plan (or `start --fault`) asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    pub action: ActionName,
    /// After the run's start.
    pub at: Duration,
    pub duration: Duration,
    /// The inspector to run it (by name); `None`: the one that declares the action.
    pub inspector: Option<String>,
}

impl std::str::FromStr for FaultPlan {
    type Err = String;
    /// `AT+DURATION:ACTION`, for example `5s+2s:pause-broker`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| {
            format!("fault {s:?}: {why} (write AT+DURATION:ACTION, for example 5s+2s:pause-broker)")
        };
        let (when, action) = s.split_once(':').ok_or_else(|| bad("no action".into()))?;
        let (at, duration) = when
            .split_once('+')
            .ok_or_else(|| bad("no +DURATION".into()))?;
        let parse =
            |v: &str| humantime::parse_duration(v.trim()).map_err(|e| bad(format!("{v:?}: {e}")));
        Ok(FaultPlan {
            action: ActionName::new(action.trim()).map_err(|e| bad(e.to_string()))?,
            at: parse(at)?,
            duration: parse(duration)?,
            inspector: None,
        })
    }
}

/// The instants (ms after the start) that fault windows cut the run into.
pub fn marks(faults: &[FaultPlan]) -> Vec<u64> {
    let mut m: Vec<u64> = faults
        .iter()
        .flat_map(|f| {
            let at = f.at.as_millis() as u64;
            [at, at + f.duration.as_millis() as u64]
        })
        .collect();
    m.sort_unstable();
    m.dedup();
    m
}

/// Why a fault has no inspector to inject it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error(
        "fault action {action:?}: inspector {inspector:?} is not online or has not declared it"
    )]
    NotDeclaredBy { action: String, inspector: String },
    #[error(
        "fault action {action:?}: no online inspector has declared it (declare it in an inspector's --faults file)"
    )]
    Undeclared { action: String },
    #[error(
        "fault action {action:?} is declared by {} inspectors ({}): name one with inspector = \"...\"",
        inspectors.len(),
        inspectors.join(", ")
    )]
    Ambiguous {
        action: String,
        inspectors: Vec<String>,
    },
}

/// Finds the inspector for each fault among the online inspectors; an action nobody
/// declared, or several declared without a name, is an error that says so.
pub fn assign(
    faults: &[FaultPlan],
    inspectors: &[Inspector],
) -> Result<Vec<(PeerId, String)>, AssignError> {
    faults
        .iter()
        .map(|f| {
            let action = f.action.as_str().to_owned();
            let declaring: Vec<&Inspector> = inspectors
                .iter()
                .filter(|i| {
                    fault::declared(&i.capabilities).any(|a| a == action)
                        && f.inspector.as_ref().is_none_or(|n| *n == i.name)
                })
                .collect();
            match declaring.as_slice() {
                [i] => Ok((i.id.clone(), i.name.clone())),
                [] => Err(match &f.inspector {
                    Some(n) => AssignError::NotDeclaredBy {
                        action,
                        inspector: n.clone(),
                    },
                    None => AssignError::Undeclared { action },
                }),
                several => Err(AssignError::Ambiguous {
                    action,
                    inspectors: several.iter().map(|i| i.name.clone()).collect(),
                }),
            }
        })
        .collect()
}

/// Where a fault is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultState {
    Planned,
    /// The inject request is out.
    Requested,
    /// The inspector issued it and saw it take effect.
    Active,
    Healed,
    /// Injection failed, or nobody answered; nothing to heal.
    Failed,
}

/// One fault's record; inputs move it forward only (a late or repeated note changes
/// nothing).
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub plan: FaultPlan,
    pub inspector: (PeerId, String),
    pub state: FaultState,
    pub requested_at_us: Option<i64>,
    pub issued_at_us: Option<i64>,
    pub confirmed_at_us: Option<i64>,
    pub healed_at_us: Option<i64>,
    pub errors: Vec<String>,
}

impl FaultRecord {
    pub fn new(plan: FaultPlan, inspector: (PeerId, String)) -> Self {
        Self {
            plan,
            inspector,
            state: FaultState::Planned,
            requested_at_us: None,
            issued_at_us: None,
            confirmed_at_us: None,
            healed_at_us: None,
            errors: Vec::new(),
        }
    }

    /// The controller sent the inject request at `now_us`.
    pub fn requested(&mut self, now_us: i64) {
        if self.state == FaultState::Planned {
            self.state = FaultState::Requested;
            self.requested_at_us = Some(now_us);
        }
    }

    /// The inspector answered; its times are on its clock, `offset_us` ahead of ours.
    pub fn injected(&mut self, i: &Injected, offset_us: i64) {
        if self.state != FaultState::Requested {
            return;
        }
        self.issued_at_us = Some(i.issued_at_us.0 - offset_us);
        self.confirmed_at_us = i.confirmed_at_us.map(|t| t.0 - offset_us);
        match &i.error {
            Some(e) => {
                self.errors.push(format!("injection failed: {e}"));
                self.state = FaultState::Failed;
            }
            None => self.state = FaultState::Active,
        }
    }

    /// The inspector refused the request, or it went unanswered.
    pub fn refused(&mut self, why: String) {
        if matches!(self.state, FaultState::Planned | FaultState::Requested) {
            self.errors.push(why);
            self.state = FaultState::Failed;
        }
    }

    pub fn healed(&mut self, h: &FaultHealed, offset_us: i64) {
        // A heal can overtake the inject reply (both are the inspector's notes, on
        // different topics): it still means the fault was active.
        if !matches!(self.state, FaultState::Active | FaultState::Requested) {
            return;
        }
        self.healed_at_us = Some(h.healed_at_us.0 - offset_us);
        if let Some(e) = &h.error {
            self.errors.push(format!("heal failed: {e}"));
        }
        self.state = FaultState::Healed;
    }

    /// Still waiting for the inspector (an answer or a heal).
    pub fn open(&self) -> bool {
        matches!(self.state, FaultState::Requested | FaultState::Active)
    }

    /// The inspector's reply to the inject request: injected (its times on its clock,
    /// `offset_us` ahead of ours), refused, or something no inspector sends.
    pub fn replied(&mut self, body: &maestro_protocol::Body, offset_us: i64) {
        use maestro_protocol::Body;
        match body {
            Body::Injected(i) => self.injected(i, offset_us),
            Body::Error(e) => self.refused(format!("{}: {}", self.inspector.1, e.message)),
            other => self.refused(format!(
                "{}: unexpected {} reply",
                self.inspector.1,
                other.kind()
            )),
        }
    }
}

/// The faults whose time has come `elapsed_us` after the run's start and that are not
/// asked for yet (their index).
pub fn due(faults: &[FaultRecord], elapsed_us: i64) -> Vec<usize> {
    faults
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            f.state == FaultState::Planned
                && i64::try_from(f.plan.at.as_micros()).unwrap_or(i64::MAX) <= elapsed_us
        })
        .map(|(i, _)| i)
        .collect()
}

/// When the next fault not asked for yet is due, after the run's start.
pub fn next_due(faults: &[FaultRecord]) -> Option<Duration> {
    faults
        .iter()
        .filter(|f| f.state == FaultState::Planned)
        .map(|f| f.plan.at)
        .min()
}

/// Sums the workers' per-segment tallies: per segment, messages sent, lost, duplicated
/// and the response-time histogram.
#[derive(Debug)]
pub struct Segments {
    pub sent: Vec<u64>,
    pub lost: Vec<u64>,
    pub duplicated: Vec<u64>,
    pub response: Vec<hdrhistogram::Histogram<u64>>,
}

impl Segments {
    pub fn of(results: &BTreeMap<PeerId, RunResult>, marks: usize) -> Self {
        let n = marks + 1;
        let mut sent_per_topic: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let mut unique: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let mut duplicated = vec![0u64; n];
        let mut response: Vec<hdrhistogram::Histogram<u64>> = (0..n)
            .map(|_| maestro_protocol::histogram::latency_histogram())
            .collect();
        for s in results.values().filter_map(|r| r.segments.as_ref()) {
            for t in &s.sent {
                let into = sent_per_topic.entry(t.topic).or_insert_with(|| vec![0; n]);
                for (a, b) in into.iter_mut().zip(&t.sent) {
                    *a += b;
                }
            }
            for c in &s.received {
                let into = unique.entry(c.consumer).or_insert_with(|| vec![0; n]);
                for (a, b) in into.iter_mut().zip(&c.unique) {
                    *a += b;
                }
                for (a, b) in duplicated.iter_mut().zip(&c.duplicated) {
                    *a += b;
                }
            }
            for (into, h) in response.iter_mut().zip(&s.response_time_us) {
                if let Ok(h) = maestro_protocol::histogram::decode(h) {
                    let _ = into.add(&h);
                }
            }
        }
        let consumers: Vec<&ConsumerPlan> = results.values().flat_map(|r| &r.consumers).collect();
        let sent = (0..n)
            .map(|k| sent_per_topic.values().map(|v| v[k]).sum())
            .collect();
        let lost = (0..n)
            .map(|k| {
                let topic_sent: BTreeMap<u32, u64> =
                    sent_per_topic.iter().map(|(t, v)| (*t, v[k])).collect();
                let received: BTreeMap<u32, u64> = unique.iter().map(|(c, v)| (*c, v[k])).collect();
                crate::summary::lost_from(&topic_sent, &received, consumers.iter().copied())
            })
            .collect();
        Self {
            sent,
            lost,
            duplicated,
            response,
        }
    }

    fn window(&self, segments: std::ops::Range<usize>) -> WindowStats {
        let mut h = maestro_protocol::histogram::latency_histogram();
        let mut w = WindowStats::default();
        for k in segments.filter(|k| *k < self.sent.len()) {
            w.sent += self.sent[k];
            w.lost += self.lost[k];
            w.duplicated += self.duplicated[k];
            let _ = h.add(&self.response[k]);
        }
        w.response_time_us = Percentiles::of(&h);
        w
    }
}

/// The per-fault numbers: windows by intended send time, from the segments; time to the
/// first error and to recovery, from the per-second rows.
pub fn summarize(
    records: &[FaultRecord],
    marks_ms: &[u64],
    segments: &Segments,
    rows: &[SecondRow],
    start_us: i64,
    expected_per_s: Option<f64>,
) -> Vec<FaultSummary> {
    let index_of = |ms: u64| marks_ms.iter().position(|m| *m == ms).unwrap_or(0);
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = r.plan.at.as_millis() as u64;
            let end = at + r.plan.duration.as_millis() as u64;
            let (a, e) = (index_of(at), index_of(end));
            let before = segments.window(a..a + 1);
            let during = segments.window(a + 1..e + 1);
            let after = segments.window(e + 1..e + 2);
            let rel_ms = |t: Option<i64>| t.map(|t| ((t - start_us).max(0) / 1000) as u64);
            let effect_ms = rel_ms(r.confirmed_at_us.or(r.issued_at_us));
            let healed_ms = rel_ms(r.healed_at_us);
            let first_error_after_ms = effect_ms.and_then(|from| {
                let until = healed_ms.unwrap_or(end) + 5_000;
                rows.iter()
                    .filter(|row| {
                        let s = u64::from(row.second) * 1000;
                        s + 1000 > from && s <= until
                    })
                    .find(|row| row.errors > 0 || row.connect_failures.is_some_and(|f| f > 0))
                    .map(|row| (u64::from(row.second) * 1000).saturating_sub(from))
            });
            let p99_limit =
                (before.response_time_us.p99 * 2).max(before.response_time_us.p99 + 5_000);
            let recovered_after_ms = healed_ms.and_then(|healed| {
                rows.iter()
                    .filter(|row| u64::from(row.second) * 1000 >= healed)
                    .find(|row| {
                        row.errors == 0
                            && expected_per_s.is_none_or(|x| row.received as f64 >= 0.9 * x)
                            && row.response_time_p99_us <= p99_limit
                    })
                    .map(|row| u64::from(row.second) * 1000 - healed)
            });
            FaultSummary {
                index: i as u32,
                action: r.plan.action.to_string(),
                inspector: r.inspector.1.clone(),
                at_ms: at,
                duration_ms: end - at,
                requested_at_us: r.requested_at_us,
                issued_at_us: r.issued_at_us,
                confirmed_at_us: r.confirmed_at_us,
                healed_at_us: r.healed_at_us,
                errors: r.errors.clone(),
                before,
                during,
                after,
                first_error_after_ms,
                recovered_after_ms,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::{RunId, UnixMicros};

    fn plan(action: &str, at_s: u64, for_s: u64) -> FaultPlan {
        FaultPlan {
            action: ActionName::new(action).unwrap_or_else(|e| panic!("{e}")),
            at: Duration::from_secs(at_s),
            duration: Duration::from_secs(for_s),
            inspector: None,
        }
    }

    fn peer(s: &str) -> PeerId {
        PeerId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn faults_go_to_the_inspector_that_declared_them() {
        let inspectors = vec![
            (
                peer("i1"),
                "sut-a".to_owned(),
                vec!["ping".into(), "fault:pause".into()],
            ),
            (
                peer("i2"),
                "sut-b".to_owned(),
                vec!["fault:pause".into(), "fault:kill".into()],
            ),
        ]
        .into_iter()
        .map(|(id, name, capabilities)| Inspector {
            id,
            name,
            clock_offset_us: 0,
            capabilities,
        })
        .collect::<Vec<_>>();
        assert_eq!(
            assign(&[plan("kill", 1, 1)], &inspectors),
            Ok(vec![(peer("i2"), "sut-b".into())])
        );
        let e = assign(&[plan("pause", 1, 1)], &inspectors).map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("fault action \"pause\" is declared by 2 inspectors (sut-a, sut-b): name one with inspector = \"...\"".into())
        );
        let mut named = plan("pause", 1, 1);
        named.inspector = Some("sut-a".into());
        assert_eq!(
            assign(&[named], &inspectors),
            Ok(vec![(peer("i1"), "sut-a".into())])
        );
        assert_eq!(
            assign(&[plan("reboot", 1, 1)], &inspectors),
            Err(AssignError::Undeclared {
                action: "reboot".into()
            })
        );
        let mut elsewhere = plan("kill", 1, 1);
        elsewhere.inspector = Some("sut-a".into());
        assert_eq!(
            assign(&[elsewhere], &inspectors),
            Err(AssignError::NotDeclaredBy {
                action: "kill".into(),
                inspector: "sut-a".into()
            })
        );
        assert_eq!(
            marks(&[plan("a", 5, 2), plan("b", 7, 1)]),
            vec![5000, 7000, 8000]
        );
    }

    #[test]
    fn faults_come_due_in_time_once_and_replies_move_them_on() {
        let who = || (peer("i1"), "sut-a".to_owned());
        let mut faults = vec![
            FaultRecord::new(plan("pause", 2, 1), who()),
            FaultRecord::new(plan("kill", 5, 1), who()),
        ];
        assert_eq!(next_due(&faults), Some(Duration::from_secs(2)));
        assert_eq!(due(&faults, 1_999_999), Vec::<usize>::new());
        assert_eq!(due(&faults, 2_000_000), vec![0]);
        faults[0].requested(2_000_000);
        // Asked for: not due again, and the next one is the kill.
        assert_eq!(due(&faults, 3_000_000), Vec::<usize>::new());
        assert_eq!(next_due(&faults), Some(Duration::from_secs(5)));
        assert_eq!(due(&faults, 9_000_000), vec![1]);
        let injected = maestro_protocol::Body::Injected(Injected {
            run: RunId::new("r").unwrap_or_else(|e| panic!("{e}")),
            fault: 0,
            issued_at_us: UnixMicros(2_100_000),
            confirmed_at_us: Some(UnixMicros(2_200_000)),
            error: None,
        });
        faults[0].replied(&injected, 100_000);
        assert_eq!(faults[0].state, FaultState::Active);
        assert_eq!(faults[0].confirmed_at_us, Some(2_100_000));
        // A reply no inspector sends fails a requested fault, naming the inspector.
        faults[1].requested(5_000_000);
        faults[1].replied(&maestro_protocol::Body::Ping(maestro_protocol::Ping {}), 0);
        assert_eq!(faults[1].state, FaultState::Failed);
        assert!(
            faults[1].errors[0].starts_with("sut-a: unexpected"),
            "{:?}",
            faults[1].errors
        );
        assert_eq!(next_due(&faults), None);
    }

    #[test]
    fn windows_sum_segments_and_lose_exactly() {
        use maestro_protocol::{ConsumerSegments, SegmentTallies, TopicSegments};
        // Marks at 2 s and 4 s: three segments. One topic, two fan-out consumers.
        let mut h = maestro_protocol::histogram::latency_histogram();
        let _ = h.record(1_000_000);
        let slow = maestro_protocol::histogram::encode(&h);
        let result = RunResult {
            run: RunId::new("r").unwrap_or_else(|e| panic!("{e}")),
            worker: peer("w"),
            counters: Default::default(),
            histograms: Default::default(),
            sent: vec![],
            deliveries: vec![],
            consumers: vec![
                ConsumerPlan {
                    id: 0,
                    topic: 0,
                    subscription: 0,
                },
                ConsumerPlan {
                    id: 1,
                    topic: 0,
                    subscription: 1,
                },
            ],
            errors: vec![],
            tls_handshake_us: None,
            connect_us: None,
            subscribe_us: None,
            connections: None,
            segments: Some(SegmentTallies {
                sent: vec![TopicSegments {
                    topic: 0,
                    sent: vec![200, 200, 200],
                }],
                received: vec![
                    ConsumerSegments {
                        consumer: 0,
                        unique: vec![200, 190, 200],
                        duplicated: vec![0, 4, 0],
                    },
                    ConsumerSegments {
                        consumer: 1,
                        unique: vec![200, 200, 199],
                        duplicated: vec![0, 0, 0],
                    },
                ],
                response_time_us: vec![String::new(), slow, String::new()],
            }),
            data_plane: None,
            part: None,
        };
        let results: BTreeMap<PeerId, RunResult> = [(peer("w"), result)].into();
        let segments = Segments::of(&results, 2);
        assert_eq!(segments.lost, vec![0, 10, 1]);
        let mut record = FaultRecord::new(plan("pause", 2, 2), (peer("i"), "i".into()));
        record.state = FaultState::Healed;
        let f = summarize(&[record], &[2000, 4000], &segments, &[], 0, None);
        assert_eq!(
            (f[0].before.sent, f[0].during.sent, f[0].after.sent),
            (200, 200, 200)
        );
        assert_eq!(
            (f[0].during.lost, f[0].during.duplicated, f[0].after.lost),
            (10, 4, 1)
        );
        assert_eq!(f[0].during.response_time_us.count, 1);
        assert!(f[0].during.response_time_us.p50 >= 999_000);
    }

    #[test]
    fn fault_flags_parse() {
        assert_eq!("5s+2s:pause".parse::<FaultPlan>(), Ok(plan("pause", 5, 2)));
        for bad in ["5s:pause", "5s+2s", "5x+2s:pause", "5s+2s:a b"] {
            assert!(bad.parse::<FaultPlan>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_fault_record_only_moves_forward() {
        let run = RunId::new("r").unwrap_or_else(|e| panic!("{e}"));
        let mut r = FaultRecord::new(plan("pause", 2, 2), (peer("i"), "i".into()));
        let heal = FaultHealed {
            run: run.clone(),
            fault: 0,
            action: r.plan.action.clone(),
            healed_at_us: UnixMicros(4_100),
            error: None,
        };
        // A heal before any request is not this fault's.
        r.healed(&heal, 0);
        assert_eq!(r.state, FaultState::Planned);
        r.requested(1_000);
        assert!(r.open());
        r.injected(
            &Injected {
                run: run.clone(),
                fault: 0,
                issued_at_us: UnixMicros(2_000),
                confirmed_at_us: Some(UnixMicros(2_100)),
                error: None,
            },
            100,
        );
        assert_eq!(r.state, FaultState::Active);
        assert_eq!(
            (r.issued_at_us, r.confirmed_at_us),
            (Some(1_900), Some(2_000))
        );
        r.refused("late".into());
        assert_eq!(
            r.state,
            FaultState::Active,
            "a late refusal changes nothing"
        );
        r.healed(&heal, 100);
        assert_eq!((r.state, r.healed_at_us), (FaultState::Healed, Some(4_000)));
        assert!(!r.open());
        let mut failed = FaultRecord::new(plan("pause", 2, 2), (peer("i"), "i".into()));
        failed.requested(1);
        failed.refused("unknown action".into());
        assert_eq!(failed.state, FaultState::Failed);
        failed.healed(&heal, 0);
        assert_eq!(failed.state, FaultState::Failed);
    }
}
