//! Any spec values at all: validation never panics, and a spec it accepts never makes
//! the schedule overflow or wrap (every producer's send times stay ordered and inside
//! its window).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::{MessageSize, TestSpec};
use maestro_worker::engine::pacing::Schedule;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Specs near and at the limits: most of them valid.
fn plausible_spec() -> impl Strategy<Value = TestSpec> {
    use maestro_protocol::{
        MAX_CLIENTS, MAX_COUNT, MAX_DURATION_MS, MAX_RATE, MAX_SIZE, MAX_TOPICS,
    };
    (
        prop_oneof![Just(0.0), 0.001..MAX_RATE, Just(MAX_RATE), Just(0.001)],
        prop_oneof![
            (1..=MAX_DURATION_MS).prop_map(|d| (Some(d), None)),
            (1..=MAX_COUNT).prop_map(|c| (None, Some(c))),
        ],
        (32..=MAX_SIZE).prop_map(MessageSize::Fixed),
        1..=MAX_CLIENTS,
        0..=MAX_CLIENTS,
        1..=MAX_TOPICS,
    )
        .prop_map(
            |(rate, (duration_ms, count), size, producers, consumers, topics)| TestSpec {
                sut: "mqtt://127.0.0.1:1/x".parse().unwrap(),
                rate,
                duration_ms,
                count,
                warmup_ms: 0,
                size,
                producers,
                consumers,
                topics,
                payload: None,
                connect_rate: None,
                fleet: None,
                marks_ms: Vec::new(),
                consumer_backlog_bytes: None,
                consumer_sut: None,
                subscriptions: None,
                arrival: maestro_protocol::Arrival::Uniform,
            },
        )
}

fn any_spec() -> impl Strategy<Value = TestSpec> {
    prop_oneof![wild_spec(), plausible_spec()]
}

/// Anything at all.
fn wild_spec() -> impl Strategy<Value = TestSpec> {
    let rate = prop_oneof![
        Just(0.0),
        any::<f64>(),
        0.0..1e9f64,
        0.001..100_000_000.0f64,
        0.001..10.0f64,
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(f64::NAN),
        Just(f64::INFINITY),
    ];
    let big_u64 = prop_oneof![
        any::<u64>(),
        0..100_000u64,
        1..604_800_000u64,
        Just(u64::MAX)
    ];
    let size = prop_oneof![
        any::<u32>().prop_map(MessageSize::Fixed),
        any::<u32>().prop_map(MessageSize::Around),
        (32..16_777_216u32).prop_map(MessageSize::Fixed),
    ];
    let clients = prop_oneof![any::<u32>(), 1..1_000_000u32, 1..10u32];
    (
        rate,
        prop_oneof![
            big_u64.clone().prop_map(|d| (Some(d), None)),
            big_u64.clone().prop_map(|c| (None, Some(c))),
            (
                prop::option::of(big_u64.clone()),
                prop::option::of(big_u64.clone())
            ),
        ],
        prop_oneof![Just(0u64), big_u64],
        size,
        clients.clone(),
        clients.clone(),
        clients,
    )
        .prop_map(
            |(rate, (duration_ms, count), warmup_ms, size, producers, consumers, topics)| {
                TestSpec {
                    sut: "mqtt://127.0.0.1:1/x".parse().unwrap(),
                    rate,
                    duration_ms,
                    count,
                    warmup_ms,
                    size,
                    producers,
                    consumers,
                    topics,
                    payload: None,
                    connect_rate: None,
                    fleet: None,
                    marks_ms: Vec::new(),
                    consumer_backlog_bytes: None,
                    consumer_sut: None,
                    subscriptions: None,
                    arrival: maestro_protocol::Arrival::Uniform,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn validation_never_panics_and_accepted_specs_never_overflow(spec in any_spec(), start in 0i64..4_000_000_000_000_000_000) {
        let Ok(()) = spec.validate() else { return Ok(()) };
        let window = spec.send_window();
        prop_assert!(window.as_millis() <= u128::from(maestro_protocol::MAX_DURATION_MS) + 1);
        // The busiest producer: its share of rate and count.
        let producers = u64::from(spec.producers);
        let rate = spec.rate / producers as f64;
        let count = spec.count.map(|c| c.div_ceil(producers));
        let duration_ns = spec.duration_ms.map(|d| i64::try_from(d).unwrap().checked_mul(1_000_000).unwrap());
        let mut s = Schedule::new(start, rate, count, duration_ns);
        let end = s.end_ns();
        prop_assert!(end >= start);
        prop_assert!(end.checked_sub(start).unwrap() <= i64::try_from(window.as_nanos()).unwrap() + 1_000_000_000);
        let last = s.due_until(end);
        if s.paced() {
            prop_assert!(last <= spec.max_sequence());
            let first = s.intended_ns(0);
            let final_ = s.intended_ns(last.saturating_sub(1));
            prop_assert!(first == start && final_ >= first && final_ <= end);
            prop_assert!(s.unsent(end, 0) == last);
        }
        let (_, max) = spec.size.bounds();
        prop_assert!(max <= maestro_protocol::MAX_SIZE);
    }
}

/// The strategy must produce accepted specs, or the property above proves nothing.
#[test]
fn the_strategy_produces_accepted_specs() {
    let mut runner = proptest::test_runner::TestRunner::default();
    let mut accepted = 0;
    for _ in 0..2000 {
        let spec = any_spec().new_tree(&mut runner).unwrap().current();
        accepted += u32::from(spec.validate().is_ok());
    }
    assert!(accepted > 100, "only {accepted} of 2000 specs are valid");
}
