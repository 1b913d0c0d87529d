//! A worker's result too large for one note goes in parts that each fit, and a
//! controller's collector puts them together again, whatever their order or duplicates.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::{
    Body, ConsumerPlan, Counters, Delivery, MAX_NOTE_BYTES, Note, PartsCollector, PartsError,
    PeerId, ResultPart, Role, RunId, RunResult, Sender, Sent, UnixMicros, encode,
};

/// One worker of `--producers 9000 --consumers 9000 --topics 9000`: a row per topic and per
/// consumer.
fn big_result(rows: u32) -> RunResult {
    RunResult {
        run: RunId::new("20261205T000000Z-abcd").unwrap(),
        worker: PeerId::new("worker-0123456789abcdef0123456789abcdef").unwrap(),
        counters: Counters {
            sent: u64::from(rows) * 1_000,
            ..Counters::default()
        },
        histograms: Default::default(),
        sent: (0..rows)
            .map(|t| Sent {
                producer: t,
                producers: 1,
                topic: t,
                sent: 1_000_000 + u64::from(t),
                unsent: 0,
                held_back: 0,
                errors: 0,
                stopped_at_us: Some(UnixMicros(1_796_441_164_379_327)),
            })
            .collect(),
        deliveries: (0..rows)
            .map(|c| Delivery {
                consumer: c,
                producer: c,
                producers: 1,
                unique: 1_000_000 + u64::from(c),
                duplicated: 0,
                out_of_order: 0,
            })
            .collect(),
        consumers: (0..rows)
            .map(|c| ConsumerPlan {
                id: c,
                topic: c,
                subscription: c,
            })
            .collect(),
        errors: Vec::new(),
        tls_handshake_us: None,
        connect_us: None,
        subscribe_us: None,
        connections: None,
        segments: None,
        data_plane: None,
        part: None,
    }
}

fn note_bytes(r: &RunResult) -> usize {
    let sender = Sender {
        id: r.worker.clone(),
        role: Role::Worker,
        name: "w0".into(),
    };
    encode(&Note::new(
        sender,
        Body::RunResult(r.clone()),
        UnixMicros(1_796_441_164_379_327),
    ))
    .len()
}

#[test]
fn a_result_of_9000_topics_and_consumers_goes_in_parts_that_fit_and_come_back_whole() {
    let whole = big_result(9_000);
    assert!(
        note_bytes(&whole) > MAX_NOTE_BYTES,
        "the shape must not fit one note"
    );
    let budget = MAX_NOTE_BYTES - 4096;
    let mut parts = whole.clone().split(budget).unwrap();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    for p in &parts {
        assert!(
            note_bytes(p) <= MAX_NOTE_BYTES,
            "a part of {} bytes",
            note_bytes(p)
        );
    }
    // Out of order, one delivered twice.
    parts.reverse();
    parts.insert(1, parts[0].clone());
    let mut collector = PartsCollector::default();
    let mut out = None;
    for p in parts {
        assert!(out.is_none(), "whole before the last part");
        out = collector.add(p).unwrap();
    }
    assert_eq!(out, Some(whole));
}

#[test]
fn a_result_that_fits_stays_one_note() {
    let small = big_result(10);
    let parts = small.clone().split(MAX_NOTE_BYTES).unwrap();
    assert_eq!(parts, vec![small.clone()]);
    assert_eq!(
        PartsCollector::default().add(small.clone()).unwrap(),
        Some(small)
    );
}

#[test]
fn forged_parts_are_refused_not_trusted() {
    let mut forged = big_result(1);
    let mut add = |index, count| {
        forged.part = Some(ResultPart { index, count });
        PartsCollector::default().add(forged.clone())
    };
    assert_eq!(add(0, 0), Err(PartsError::TooMany { count: 0 }));
    assert_eq!(
        add(0, 1_000_000),
        Err(PartsError::TooMany { count: 1_000_000 })
    );
    assert_eq!(
        add(5, 3),
        Err(PartsError::OutOfRange { index: 5, count: 3 })
    );
    let mut c = PartsCollector::default();
    let mut a = big_result(1);
    a.part = Some(ResultPart { index: 0, count: 2 });
    assert_eq!(c.add(a.clone()), Ok(None));
    a.part = Some(ResultPart { index: 1, count: 3 });
    assert_eq!(c.add(a.clone()), Err(PartsError::CountMismatch(2, 3)));
    a.part = Some(ResultPart { index: 1, count: 2 });
    a.run = RunId::new("another").unwrap();
    assert_eq!(c.add(a), Err(PartsError::Mixed));
}

#[test]
fn a_budget_smaller_than_the_fixed_fields_is_an_error() {
    assert!(matches!(
        big_result(100).split(200),
        Err(PartsError::TooLarge { .. })
    ));
}
