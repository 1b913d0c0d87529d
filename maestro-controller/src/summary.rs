//! A run's numbers from what its workers reported: delivery accounting (loss over
//! subscriptions), merged latency histograms, the measured send span and rates, and the
//! clock corrections; as a [`RunSummary`] of the results model.

use maestro_protocol::{Counters, ErrorCount, PeerId, RunId, RunResult, TestSpec};
use maestro_report::model::{GeneratorVerdict, GeneratorWorker};
use maestro_report::timeseries::Latencies;
use maestro_report::{ClockSummary, Percentiles, RunSummary, SCHEMA_VERSION, WorkerSummary};
use std::collections::{BTreeMap, BTreeSet};

/// Everything a run collected.
#[derive(Debug, Default)]
pub struct Collected {
    pub results: BTreeMap<PeerId, RunResult>,
    pub degraded: Vec<String>,
    pub interrupted: bool,
    /// Each worker's clock offset and ping round trip, µs (ahead of the controller).
    pub clocks: BTreeMap<PeerId, (i64, i64)>,
}

impl Collected {
    /// One figure of the producers' rows (`Sent`), summed over every worker's result.
    pub fn sent_rows(&self, figure: impl Fn(&maestro_protocol::Sent) -> u64) -> u64 {
        self.results
            .values()
            .flat_map(|r| &r.sent)
            .map(figure)
            .sum()
    }
}

/// The measured send span in seconds: from `from_us` (the end of the warm-up, controller
/// clock) to the latest producer stop, each corrected by its worker's clock offset.
pub fn send_span_s(collected: &Collected, from_us: i64) -> f64 {
    let end = collected
        .results
        .iter()
        .flat_map(|(id, r)| {
            let offset = collected.clocks.get(id).map_or(0, |c| c.0);
            r.sent
                .iter()
                .filter_map(move |s| s.stopped_at_us.map(|t| t.0 - offset))
        })
        .max();
    end.map_or(0.0, |end| (end - from_us).max(0) as f64 / 1e6)
}

/// Delivery accounting over all results: every subscription expects every message sent to
/// its topic; what none of its consumers received is lost. With one consumer per
/// subscription (fan-out) this is exact; with competing consumers it counts each
/// consumer's distinct messages, so a message redelivered to a second consumer of the
/// same subscription (after a failure) would hide a loss of equal size.
pub fn lost(results: &BTreeMap<PeerId, RunResult>) -> u64 {
    let mut sent_per_topic: BTreeMap<u32, u64> = BTreeMap::new();
    for r in results.values() {
        for s in &r.sent {
            *sent_per_topic.entry(s.topic).or_default() += s.sent;
        }
    }
    let mut unique_per_consumer: BTreeMap<u32, u64> = BTreeMap::new();
    for r in results.values() {
        for d in &r.deliveries {
            *unique_per_consumer.entry(d.consumer).or_default() += d.unique;
        }
    }
    lost_from(
        &sent_per_topic,
        &unique_per_consumer,
        results.values().flat_map(|r| &r.consumers),
    )
}

/// Messages lost, from what was sent per topic and what each consumer received
/// (distinct): every subscription of a topic expects each of its messages once.
pub fn lost_from<'a>(
    sent_per_topic: &BTreeMap<u32, u64>,
    unique_per_consumer: &BTreeMap<u32, u64>,
    consumers: impl Iterator<Item = &'a maestro_protocol::ConsumerPlan>,
) -> u64 {
    // (topic, subscription) -> distinct messages received by its consumers.
    let mut per_subscription: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for c in consumers {
        *per_subscription
            .entry((c.topic, c.subscription))
            .or_default() += unique_per_consumer.get(&c.id).copied().unwrap_or(0);
    }
    per_subscription
        .iter()
        .map(|((topic, _), received)| {
            sent_per_topic
                .get(topic)
                .copied()
                .unwrap_or(0)
                .saturating_sub(*received)
        })
        .sum()
}

/// One optional histogram of every result, merged (`None` when no worker had it); an
/// unreadable one degrades the run, naming the worker.
fn merged(
    collected: &Collected,
    what: &str,
    field: impl Fn(&RunResult) -> Option<&String>,
    degraded: &mut Vec<String>,
) -> Option<hdrhistogram::Histogram<u64>> {
    let mut out: Option<hdrhistogram::Histogram<u64>> = None;
    for (id, r) in &collected.results {
        let Some(encoded) = field(r) else { continue };
        match maestro_protocol::histogram::decode(encoded) {
            Ok(h) => {
                let m = out.get_or_insert_with(maestro_protocol::histogram::latency_histogram);
                if m.add(&h).is_err() {
                    degraded.push(format!("worker {id}: {what} histogram out of range"));
                }
            }
            Err(e) => degraded.push(format!("worker {id}: unreadable {what} histogram: {e}")),
        }
    }
    out
}

/// The rate the schedule offers: the asked rate, or for a count that does not split evenly
/// over the producers, the count over the send window (the busiest producer's share sets
/// the window; the others finish early), so such a run is not reported below its offer.
fn offered_rate(spec: &TestSpec) -> f64 {
    match spec.count {
        Some(count) if spec.rate > 0.0 => {
            let window = spec.send_window().as_secs_f64();
            if window > 0.0 {
                spec.rate.min(count as f64 / window)
            } else {
                spec.rate
            }
        }
        _ => spec.rate,
    }
}

/// The workers' connection stats merged; `None` when no worker tracked connections.
fn connection_summary(
    collected: &Collected,
    degraded: &mut Vec<String>,
) -> Option<maestro_report::ConnectionSummary> {
    let mut total: Option<maestro_protocol::ConnectionStats> = None;
    for c in collected
        .results
        .values()
        .filter_map(|r| r.connections.as_ref())
    {
        total.get_or_insert_with(Default::default).add(c);
    }
    let tcp = merged(
        collected,
        "TCP connect",
        |r| r.connections.as_ref()?.tcp_connect_us.as_ref(),
        degraded,
    );
    let t = total?;
    Some(maestro_report::ConnectionSummary {
        opened: t.opened,
        reconnects: t.reconnects,
        dropped: t.dropped,
        churned: t.churned,
        failures: t.failures,
        received_by_clients: t.received_by_clients,
        reason_codes: t.reason_codes,
        tcp_connect_us: tcp.as_ref().map(Percentiles::of),
        peak_per_s: t.per_second.iter().map(|(_, n)| *n).max().unwrap_or(0),
        per_second: t.per_second,
    })
}

/// A worker that took part in a run, with its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: PeerId,
    pub name: String,
    pub producers: usize,
    pub consumers: usize,
}

#[allow(clippy::too_many_arguments)]
pub fn summarize(
    run: &RunId,
    spec: &TestSpec,
    started_at: std::time::SystemTime,
    measure_from_us: i64,
    workers: &[Participant],
    collected: &Collected,
) -> RunSummary {
    let mut total = Counters::default();
    let mut latencies = Latencies::default();
    let mut degraded = collected.degraded.clone();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for (id, r) in &collected.results {
        total.add(&r.counters);
        if let Err(e) = latencies.add(&r.histograms) {
            degraded.push(format!("worker {id}: unreadable histograms: {e}"));
        }
        for e in &r.errors {
            *errors.entry(e.message.clone()).or_default() += e.count;
        }
    }
    let timings = [
        merged(
            collected,
            "TLS handshake",
            |r| r.tls_handshake_us.as_ref(),
            &mut degraded,
        ),
        merged(
            collected,
            "connect",
            |r| r.connect_us.as_ref(),
            &mut degraded,
        ),
        merged(
            collected,
            "subscribe",
            |r| r.subscribe_us.as_ref(),
            &mut degraded,
        ),
    ];
    let worker_summaries: Vec<WorkerSummary> = workers
        .iter()
        .map(|w| {
            let r = collected.results.get(&w.id);
            WorkerSummary {
                id: w.id.to_string(),
                name: w.name.clone(),
                producers: w.producers,
                consumers: w.consumers,
                sent: r.map_or(0, |r| r.counters.sent),
                received: r.map_or(0, |r| r.counters.received),
                errors: r.map_or(0, |r| r.counters.errors),
                reported: r.is_some(),
            }
        })
        .collect();
    for w in &worker_summaries {
        if !w.reported && !degraded.iter().any(|d| d.contains(&w.id)) {
            degraded.push(format!("worker {} ({}) sent no result", w.name, w.id));
        }
    }
    if total.errors > 0 {
        degraded.push(format!(
            "the SUT returned {} errors (see error_messages)",
            total.errors
        ));
    }
    let connections = connection_summary(collected, &mut degraded);
    let unique: BTreeSet<&String> = degraded.iter().collect();
    let degraded: Vec<String> = unique.into_iter().cloned().collect();
    let measured_s = send_span_s(collected, measure_from_us);
    let unsent = collected.sent_rows(|s| s.unsent);
    let per_s = |n: u64| {
        if measured_s > 0.0 {
            n as f64 / measured_s
        } else {
            0.0
        }
    };
    let mut summary = RunSummary {
        schema_version: SCHEMA_VERSION,
        run_id: run.to_string(),
        sut: spec.sut.redacted(),
        consumer_sut: spec.consumer_sut.as_ref().map(|c| c.redacted()),
        subscriptions: spec.subscriptions,
        arrival: (!spec.arrival.is_uniform()).then(|| spec.arrival.to_string()),
        started_at: humantime::format_rfc3339_millis(started_at).to_string(),
        measured_s,
        sent: total.sent,
        unsent,
        received: total.received,
        lost: lost(&collected.results),
        duplicated: total.duplicated,
        out_of_order: total.out_of_order,
        errors: total.errors,
        foreign: total.foreign,
        offered_rate: offered_rate(spec),
        achieved_rate: per_s(latencies.lag.len()),
        achieved_fraction: (spec.rate > 0.0)
            .then(|| per_s(latencies.lag.len()) / offered_rate(spec)),
        receive_rate: per_s(latencies.response.len()),
        achieved_bytes_rate: Some(per_s(total.sent_bytes)),
        receive_bytes_rate: Some(per_s(total.received_bytes)),
        degraded: !degraded.is_empty(),
        degraded_reasons: degraded,
        interrupted: collected.interrupted,
        response_time_us: Percentiles::of(&latencies.response),
        service_time_us: Percentiles::of(&latencies.service),
        send_lag_us: Percentiles::of(&latencies.lag),
        publish_latency_us: (!latencies.publish.is_empty())
            .then(|| Percentiles::of(&latencies.publish)),
        tls_handshake_us: timings[0].as_ref().map(Percentiles::of),
        connect_us: timings[1].as_ref().map(Percentiles::of),
        subscribe_us: timings[2].as_ref().map(Percentiles::of),
        connections,
        clock: clock_summary(collected, workers),
        sut_metrics: None,
        backlog: None,
        max_backlog: None,
        faults: Vec::new(),
        workers: worker_summaries,
        error_messages: errors
            .into_iter()
            .map(|(message, count)| ErrorCount { message, count })
            .collect(),
        generator: None,
        partial: None,
    };
    summary.generator = Some(generator_verdict(&summary, collected, workers));
    summary
}

/// A data-plane thread busier than this (CPU time over the span) was the limit.
pub const BUSY_LIMIT: f64 = 0.90;
/// Data-plane threads that waited for a CPU this long (a fraction of the span) were
/// starved of CPU: by other processes, or by a CPU quota.
pub const WAITED_LIMIT: f64 = 0.20;
/// Producers this late (send lag p99, µs), and later than the SUT's own delay, fell behind
/// their schedule by themselves.
pub const SEND_LAG_LIMIT_US: u64 = 1_000;
/// Producers held back by the SUT (no room in the client's window or socket when a
/// message was due) for at least this fraction of their messages: their lateness at p99
/// is the SUT's back-pressure.
pub const HELD_BACK_LIMIT: f64 = 0.01;
/// Unsent messages above this fraction of those due, while the SUT acknowledged within
/// [`PROMPT_ACK_US`] at p99, were the tool's.
pub const UNSENT_LIMIT: f64 = 0.001;
pub const PROMPT_ACK_US: u64 = 10_000;

/// Whether the tool, not the SUT, limited the run: from the workers' data-plane threads
/// (busy, or starved of CPU), the producers' lateness against the SUT's delay, and
/// messages left unsent while the SUT acknowledged promptly.
pub fn generator_verdict(
    s: &RunSummary,
    collected: &Collected,
    workers: &[Participant],
) -> GeneratorVerdict {
    let mut reasons = Vec::new();
    let mut per_worker = Vec::new();
    for Participant { id, name, .. } in workers {
        let Some(load) = collected
            .results
            .get(id)
            .and_then(|r| r.data_plane.as_ref())
        else {
            continue;
        };
        let w = GeneratorWorker {
            worker: name.clone(),
            threads: load.threads.len(),
            cpu_s: load.threads.iter().map(|t| t.cpu_us).sum::<u64>() as f64 / 1e6,
            busy_max: load.busy_max(),
            waited_max: load.waited_max(),
            wait_per_wake_us: load.wait_per_wake_max_us(),
        };
        if w.busy_max >= BUSY_LIMIT {
            reasons.push(format!(
                "worker {name}: a data-plane thread was busy {:.0} % of the run (limit {:.0} %)",
                w.busy_max * 100.0,
                BUSY_LIMIT * 100.0
            ));
        }
        if w.waited_max >= WAITED_LIMIT {
            let per_wake = w
                .wait_per_wake_us
                .map(|p| format!(", {p:.0} µs per wake-up"))
                .unwrap_or_default();
            reasons.push(format!(
                "worker {name}: its data-plane threads waited for a CPU {:.0} % of the run (limit {:.0} %){per_wake}: other processes or a CPU quota starved it",
                w.waited_max * 100.0,
                WAITED_LIMIT * 100.0
            ));
        }
        per_worker.push(w);
    }
    let lag = &s.send_lag_us;
    let service_p99 = s.service_time_us.p99;
    // Late producers are the tool's only when the SUT was prompt: its delay (service
    // time) below their lateness, and its acknowledgements (where there are some) prompt.
    // A SUT that stalls holds the producers back through a full window or socket, and
    // that lateness is the SUT's.
    let acks_prompt = s
        .publish_latency_us
        .as_ref()
        .is_none_or(|a| a.count == 0 || a.p99 <= PROMPT_ACK_US);
    let held_back = collected.sent_rows(|s| s.held_back);
    let held_back_fraction = if s.sent > 0 {
        held_back as f64 / s.sent as f64
    } else {
        0.0
    };
    if lag.count > 0
        && lag.p99 >= SEND_LAG_LIMIT_US
        && lag.p99 > service_p99
        && acks_prompt
        && held_back_fraction < HELD_BACK_LIMIT
    {
        reasons.push(format!(
            "send lag p99 {} µs (limit {SEND_LAG_LIMIT_US} µs) above the SUT's service time p99 {service_p99} µs: the producers fell behind their schedule",
            lag.p99
        ));
    }
    let due = s.sent + s.unsent;
    let unsent_fraction = if due > 0 {
        s.unsent as f64 / due as f64
    } else {
        0.0
    };
    if let Some(ack) = &s.publish_latency_us
        && unsent_fraction > UNSENT_LIMIT
        && ack.count > 0
        && ack.p99 <= PROMPT_ACK_US
    {
        reasons.push(format!(
            "{} messages unsent ({:.2} % of those due) while the SUT acknowledged within {} µs at p99",
            s.unsent,
            unsent_fraction * 100.0,
            ack.p99
        ));
    }
    GeneratorVerdict {
        bound: !reasons.is_empty(),
        reasons,
        send_lag_p50_us: lag.p50,
        send_lag_p99_us: lag.p99,
        send_lag_p999_us: lag.p999,
        service_time_p99_us: service_p99,
        unsent_fraction,
        held_back_fraction,
        workers: per_worker,
    }
}

fn clock_summary(collected: &Collected, workers: &[Participant]) -> ClockSummary {
    let mut out = ClockSummary::default();
    let producing: Vec<&(i64, i64)> = workers
        .iter()
        .filter(|w| w.producers > 0)
        .filter_map(|w| collected.clocks.get(&w.id))
        .collect();
    let consuming: Vec<&(i64, i64)> = workers
        .iter()
        .filter(|w| w.consumers > 0)
        .filter_map(|w| collected.clocks.get(&w.id))
        .collect();
    for Participant { id, name, .. } in workers {
        if let Some((offset, _)) = collected.clocks.get(id) {
            out.offsets_us.insert(name.clone(), *offset);
        }
    }
    for p in &producing {
        for c in &consuming {
            let correction = (c.0 - p.0).abs();
            let bound = (c.1 + p.1) / 2;
            if correction > out.max_offset_us
                || (correction == out.max_offset_us && bound > out.error_bound_us)
            {
                out.max_offset_us = correction;
                out.error_bound_us = bound;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::{ConsumerPlan, Delivery, Sent};

    fn result(
        worker: &str,
        sent: Vec<Sent>,
        deliveries: Vec<Delivery>,
        consumers: Vec<ConsumerPlan>,
    ) -> RunResult {
        RunResult {
            run: RunId::new("r").unwrap(),
            worker: PeerId::new(worker).unwrap(),
            counters: Counters::default(),
            histograms: Default::default(),
            sent,
            deliveries,
            consumers,
            errors: vec![],
            tls_handshake_us: None,
            connect_us: None,
            subscribe_us: None,
            connections: None,
            segments: None,
            data_plane: None,
            part: None,
        }
    }

    fn sent(producer: u32, topic: u32, sent: u64) -> Sent {
        Sent {
            producer,
            producers: 1,
            topic,
            sent,
            unsent: 0,
            held_back: 0,
            errors: 0,
            stopped_at_us: None,
        }
    }

    #[test]
    fn lateness_the_sut_held_back_is_not_the_tools() {
        let mut s = RunSummary::new("r", "mqtt://h", "2026-12-06T00:00:00Z");
        s.sent = 1000;
        s.send_lag_us = maestro_report::Percentiles {
            count: 1000,
            p99: 1_500_000,
            ..Default::default()
        };
        s.service_time_us = maestro_report::Percentiles {
            count: 1000,
            p99: 3_000,
            ..Default::default()
        };
        let collected = |held_back| {
            let mut results = BTreeMap::new();
            let row = Sent {
                held_back,
                ..sent(0, 0, 1000)
            };
            results.insert(
                PeerId::new("w1").unwrap(),
                result("w1", vec![row], vec![], vec![]),
            );
            Collected {
                results,
                ..Default::default()
            }
        };
        // Late by itself: the producers fell behind while the SUT answered in 3 ms.
        let late = generator_verdict(&s, &collected(0), &[]);
        assert!(late.bound, "{late:?}");
        assert!(
            late.reasons[0].contains("fell behind their schedule"),
            "{late:?}"
        );
        // A quarter of the messages waited for room in a full window: the SUT's doing.
        let held = generator_verdict(&s, &collected(250), &[]);
        assert!(!held.bound, "{held:?}");
        assert!((held.held_back_fraction - 0.25).abs() < 1e-9);
        assert!(
            held.line().contains("25.0 % held back by the SUT"),
            "{}",
            held.line()
        );
    }

    #[test]
    fn loss_is_exact_with_fan_out_across_workers() {
        // Topic 0: producers 0 (w1, 100 sent) and 1 (w2, 50 sent); consumers 0 (w1) and 1 (w2)
        // both on topic 0: each expects 150. Consumer 1 missed 3 of producer 1.
        let d = |consumer, producer, unique| Delivery {
            consumer,
            producer,
            producers: 1,
            unique,
            duplicated: 0,
            out_of_order: 0,
        };
        let mut results = BTreeMap::new();
        results.insert(
            PeerId::new("w1").unwrap(),
            result(
                "w1",
                vec![sent(0, 0, 100)],
                vec![d(0, 0, 100), d(0, 1, 50)],
                vec![ConsumerPlan {
                    id: 0,
                    topic: 0,
                    subscription: 0,
                }],
            ),
        );
        results.insert(
            PeerId::new("w2").unwrap(),
            result(
                "w2",
                vec![sent(1, 0, 50)],
                vec![d(1, 0, 100), d(1, 1, 47)],
                vec![ConsumerPlan {
                    id: 1,
                    topic: 0,
                    subscription: 1,
                }],
            ),
        );
        assert_eq!(lost(&results), 3);
        // Competing consumers: both in subscription 0 share the 150 messages.
        let mut competing = BTreeMap::new();
        competing.insert(
            PeerId::new("w1").unwrap(),
            result(
                "w1",
                vec![sent(0, 0, 150)],
                vec![d(0, 0, 80), d(1, 0, 68)],
                vec![
                    ConsumerPlan {
                        id: 0,
                        topic: 0,
                        subscription: 0,
                    },
                    ConsumerPlan {
                        id: 1,
                        topic: 0,
                        subscription: 0,
                    },
                ],
            ),
        );
        assert_eq!(lost(&competing), 2);
    }
}

#[cfg(test)]
mod offer_tests {
    #[test]
    fn a_count_that_does_not_split_evenly_offers_less_than_the_rate() {
        let mut spec = maestro_protocol::TestSpec {
            duration_ms: None,
            count: Some(45),
            producers: 10,
            ..maestro_protocol::TestSpec::new(
                "mqtt://h/x".parse().unwrap_or_else(|e| panic!("{e}")),
                20.0,
                std::time::Duration::ZERO,
            )
        };
        // The busiest 5 producers send 5 at 2/s: a 2.5 s window for 45 messages.
        assert!((super::offered_rate(&spec) - 18.0).abs() < 1e-9);
        spec.count = Some(50);
        assert!((super::offered_rate(&spec) - 20.0).abs() < 1e-9);
        spec.count = None;
        spec.duration_ms = Some(1000);
        assert_eq!(super::offered_rate(&spec), 20.0);
    }
}
