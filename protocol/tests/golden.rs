//! Golden JSON fixtures: one per note type. The wire format of a note may only change on
//! purpose. To regenerate after an intended change: `MAESTRO_BLESS=1 cargo test -p
//! maestro-protocol --test golden`, then review the diff.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::*;
use std::path::PathBuf;

fn sender(role: Role) -> Sender {
    Sender {
        id: PeerId::new(format!("{role}-0001")).unwrap(),
        role,
        name: format!("{role}@host-a"),
    }
}

fn note(id: u128, role: Role, body: Body) -> Note {
    Note {
        version: PROTOCOL_VERSION,
        id: NoteId(uuid::Uuid::from_u128(id)),
        correlation_id: None,
        reply_to: None,
        sender: sender(role),
        sent_at_us: UnixMicros(1_700_000_000_000_000),
        body,
    }
}

fn request(id: u128, body: Body) -> Note {
    let mut n = note(id, Role::Controller, body);
    n.reply_to = Some("maestro/v1/default/reply/controller-0001".into());
    n
}

fn reply(id: u128, body: Body) -> Note {
    let mut n = note(id, Role::Worker, body);
    n.correlation_id = Some(NoteId(uuid::Uuid::from_u128(1)));
    n.sent_at_us = UnixMicros(1_700_000_000_000_450);
    n
}

fn peer_info() -> PeerInfo {
    PeerInfo {
        id: PeerId::new("worker-0001").unwrap(),
        name: "worker@host-a".into(),
        role: Role::Worker,
        host: "host-a".into(),
        group: Segment::new("all").unwrap(),
        member: "member-1".into(),
        version: "0.1.0".into(),
        capabilities: vec!["ping".into(), "stats".into(), "halt".into()],
        keep_alive_ms: 5000,
        pid: 4242,
        started_at_us: UnixMicros(1_699_999_990_000_000),
        machine: Some(maestro_protocol::Machine {
            cores: 2,
            kernel: "6.1.0-18-amd64".into(),
        }),
    }
}

fn samples() -> Vec<(&'static str, Note)> {
    vec![
        (
            "presence_online",
            note(
                10,
                Role::Worker,
                Body::Presence(Presence {
                    status: PresenceStatus::Online,
                    peer: peer_info(),
                }),
            ),
        ),
        (
            "presence_offline",
            note(
                11,
                Role::Worker,
                Body::Presence(Presence {
                    status: PresenceStatus::Offline,
                    peer: peer_info(),
                }),
            ),
        ),
        ("ping", request(1, Body::Ping(Ping {}))),
        (
            "pong",
            reply(
                2,
                Body::Pong(Pong {
                    ping_sent_at_us: UnixMicros(1_700_000_000_000_000),
                    received_at_us: UnixMicros(1_700_000_000_000_400),
                }),
            ),
        ),
        (
            "stats_request",
            request(3, Body::StatsRequest(StatsRequest {})),
        ),
        (
            "stats",
            reply(
                4,
                Body::Stats(Stats {
                    peer: peer_info(),
                    state: PeerState::Idle,
                    uptime_ms: 10_000,
                    connected_since_us: UnixMicros(1_699_999_990_100_000),
                    reconnects: 1,
                    notes_received: 7,
                    bad_notes: 2,
                    refused_notes: 1,
                    signed: true,
                    run: Some(run_id()),
                }),
            ),
        ),
        ("halt", request(5, Body::Halt(Halt {}))),
        ("halted", reply(6, Body::Halted(Halted {}))),
        (
            "error",
            reply(
                7,
                Body::Error(ErrorNote {
                    code: ErrorCode::UnknownType,
                    message: "unknown note type \"launch\"".into(),
                }),
            ),
        ),
        ("configure", request(20, Body::Configure(configure()))),
        (
            "configured",
            reply(21, Body::Configured(Configured { run: run_id() })),
        ),
        (
            "start",
            request(
                22,
                Body::Start(Start {
                    run: run_id(),
                    start_at_us: UnixMicros(1_700_000_000_500_000),
                }),
            ),
        ),
        (
            "started",
            reply(23, Body::Started(Started { run: run_id() })),
        ),
        ("stop", request(24, Body::Stop(Stop { run: run_id() }))),
        (
            "stopping",
            reply(25, Body::Stopping(Stopping { run: run_id() })),
        ),
        ("renew", request(28, Body::Renew(Renew { run: run_id() }))),
        (
            "resume",
            request(29, Body::Resume(Resume { run: run_id() })),
        ),
        (
            "resumed",
            reply(30, Body::Resumed(Resumed { run: run_id() })),
        ),
        (
            "run_stats",
            note(
                26,
                Role::Worker,
                Body::RunStats(RunStats {
                    run: run_id(),
                    second: 1,
                    interval_start_us: UnixMicros(1_700_000_001_000_000),
                    interval_end_us: UnixMicros(1_700_000_002_000_000),
                    counters: counters(),
                    histograms: histograms(),
                    active_producers: 1,
                    active_consumers: 2,
                    connections: Some(SecondConnections {
                        connected: 3,
                        opened: 1,
                        failed: 0,
                    }),
                }),
            ),
        ),
        (
            "run_result",
            note(
                27,
                Role::Worker,
                Body::RunResult(RunResult {
                    run: run_id(),
                    worker: PeerId::new("worker-0001").unwrap(),
                    counters: counters(),
                    histograms: histograms(),
                    sent: vec![Sent {
                        producer: 0,
                        producers: 1,
                        topic: 0,
                        sent: 1000,
                        unsent: 5,
                        held_back: 2,
                        errors: 0,
                        stopped_at_us: Some(UnixMicros(1_700_000_031_000_000)),
                    }],
                    deliveries: vec![Delivery {
                        consumer: 0,
                        producer: 0,
                        producers: 1,
                        unique: 999,
                        duplicated: 1,
                        out_of_order: 2,
                    }],
                    consumers: vec![ConsumerPlan {
                        id: 0,
                        topic: 0,
                        subscription: 0,
                    }],
                    errors: vec![ErrorCount {
                        message: "connection reset".into(),
                        count: 1,
                    }],
                    tls_handshake_us: None,
                    connect_us: None,
                    subscribe_us: None,
                    connections: Some(ConnectionStats {
                        opened: 4,
                        reconnects: 1,
                        dropped: 1,
                        churned: 0,
                        failures: [("refused".to_owned(), 2)].into(),
                        per_second: vec![(1_700_000_000, 3), (1_700_000_001, 1)],
                        received_by_clients: 0,
                        reason_codes: [("PUBACK NoMatchingSubscribers".to_owned(), 7)].into(),
                        tcp_connect_us: None,
                    }),
                    segments: Some(SegmentTallies {
                        sent: vec![TopicSegments {
                            topic: 0,
                            sent: vec![300, 200, 500],
                        }],
                        received: vec![ConsumerSegments {
                            consumer: 0,
                            unique: vec![300, 199, 500],
                            duplicated: vec![0, 1, 0],
                        }],
                        response_time_us: vec![
                            sample_histogram(),
                            sample_histogram(),
                            sample_histogram(),
                        ],
                    }),
                    data_plane: None,
                    part: None,
                }),
            ),
        ),
        (
            "sut_stats",
            note(
                29,
                Role::Inspector,
                Body::SutStats(SutStats {
                    at_us: UnixMicros(1_700_000_001_000_000),
                    samples: vec![
                        SourceSample {
                            source: "mqtt-sys".into(),
                            kind: SourceKind::MqttSys,
                            error: None,
                            metrics: vec![
                                Metric::counter("messages_received", 12_345.0),
                                Metric::gauge("clients_connected", 3.0),
                            ],
                        },
                        SourceSample {
                            source: "rabbitmq".into(),
                            kind: SourceKind::Rabbitmq,
                            error: None,
                            metrics: vec![Metric::gauge("queue_depth", 40.0).labelled("orders")],
                        },
                        SourceSample {
                            source: "kafka".into(),
                            kind: SourceKind::Kafka,
                            error: Some("connection refused".into()),
                            metrics: Vec::new(),
                        },
                    ],
                }),
            ),
        ),
        ("sut_request", request(34, Body::SutRequest(SutRequest {}))),
        (
            "inject",
            request(
                30,
                Body::Inject(Inject {
                    run: run_id(),
                    fault: 0,
                    action: ActionName::new("pause-mosquitto").unwrap(),
                    duration_ms: 2000,
                }),
            ),
        ),
        (
            "injected",
            reply(
                31,
                Body::Injected(Injected {
                    run: run_id(),
                    fault: 0,
                    issued_at_us: UnixMicros(1_700_000_005_000_000),
                    confirmed_at_us: Some(UnixMicros(1_700_000_005_000_900)),
                    error: None,
                }),
            ),
        ),
        (
            "fault_healed",
            note(
                32,
                Role::Inspector,
                Body::FaultHealed(FaultHealed {
                    run: run_id(),
                    fault: 0,
                    action: ActionName::new("pause-mosquitto").unwrap(),
                    healed_at_us: UnixMicros(1_700_000_007_000_000),
                    error: None,
                }),
            ),
        ),
    ]
}

fn run_id() -> RunId {
    RunId::new("run-1").unwrap()
}

fn counters() -> Counters {
    Counters {
        sent: 1000,
        received: 1000,
        errors: 0,
        duplicated: 1,
        out_of_order: 2,
        foreign: 0,
        sent_bytes: 256_000,
        received_bytes: 256_000,
    }
}

fn histograms() -> EncodedHistograms {
    EncodedHistograms {
        response_time_us: sample_histogram(),
        service_time_us: sample_histogram(),
        send_lag_us: sample_histogram(),
        publish_latency_us: Some(sample_histogram()),
    }
}

fn sample_histogram() -> String {
    let mut h = maestro_protocol::histogram::latency_histogram();
    for v in [120, 250, 250, 980, 15_000] {
        h.record(v).unwrap();
    }
    maestro_protocol::histogram::encode(&h)
}

fn configure() -> Configure {
    Configure {
        run: run_id(),
        spec: TestSpec {
            sut: "mqtt://127.0.0.1:1884/bench?qos=1".parse().unwrap(),
            rate: 10000.0,
            duration_ms: Some(30_000),
            count: None,
            warmup_ms: 2000,
            size: MessageSize::Around(256),
            producers: 4,
            consumers: 4,
            topics: 2,
            payload: None,
            connect_rate: None,
            fleet: None,
            marks_ms: Vec::new(),
            consumer_backlog_bytes: None,
            consumer_sut: None,
            subscriptions: None,
            arrival: maestro_protocol::Arrival::Uniform,
        },
        producers: IdRange {
            first: 0,
            stride: 2,
            count: 2,
        },
        consumers: vec![ConsumerPlan {
            id: 1,
            topic: 1,
            subscription: 1,
        }],
        lease_ms: 5000,
        producer_skews: vec![ProducerSkew {
            producers: IdRange {
                first: 1,
                stride: 2,
                count: 2,
            },
            skew_us: -300_000,
        }],
    }
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"))
}

#[test]
fn every_note_type_has_a_golden_fixture() {
    let bless = std::env::var_os("MAESTRO_BLESS").is_some();
    let samples = samples();
    for kind in Body::TYPES {
        assert!(
            samples.iter().any(|(_, n)| n.body.kind() == *kind),
            "no golden sample for note type {kind}"
        );
    }
    for (name, note) in samples {
        let path = fixture_path(name);
        if bless {
            let mut text = serde_json::to_string_pretty(&note).unwrap();
            text.push('\n');
            std::fs::write(&path, text).unwrap();
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with MAESTRO_BLESS=1)", path.display()));
        let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            serde_json::to_value(&note).unwrap(),
            golden,
            "{name}: encoding differs from {}",
            path.display()
        );
        assert_eq!(
            decode(text.as_bytes()).unwrap(),
            note,
            "{name}: fixture decodes differently"
        );
    }
}
