//! Property test: every note survives encode then decode unchanged.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::*;
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.@:-]{1,64}"
}

fn micros() -> impl Strategy<Value = UnixMicros> {
    any::<i64>().prop_map(UnixMicros)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Worker),
        Just(Role::Inspector),
        Just(Role::Controller)
    ]
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (
        segment(),
        any::<String>(),
        role(),
        any::<String>(),
        segment(),
        any::<String>(),
        any::<String>(),
        prop::collection::vec(any::<String>(), 0..4),
        any::<u64>(),
        any::<u32>(),
        micros(),
    )
        .prop_map(
            |(id, name, role, host, group, member, version, capabilities, ka, pid, started)| {
                PeerInfo {
                    id: PeerId::new(id).unwrap(),
                    name,
                    role,
                    host,
                    group: Segment::new(group).unwrap(),
                    member,
                    version,
                    capabilities,
                    keep_alive_ms: ka,
                    pid,
                    started_at_us: started,
                    machine: None,
                }
            },
        )
}

fn body() -> impl Strategy<Value = Body> {
    let state = prop_oneof![
        Just(PeerState::Idle),
        Just(PeerState::Configured),
        Just(PeerState::Running),
        Just(PeerState::Stopping)
    ];
    let code = prop_oneof![
        Just(ErrorCode::Malformed),
        Just(ErrorCode::UnknownType),
        Just(ErrorCode::UnsupportedVersion),
        Just(ErrorCode::Oversize),
        Just(ErrorCode::Unsupported),
        Just(ErrorCode::Busy),
        Just(ErrorCode::InvalidSpec),
        Just(ErrorCode::SutUnreachable),
        Just(ErrorCode::UnknownRun),
        Just(ErrorCode::Unauthenticated)
    ];
    prop_oneof![
        (peer_info(), any::<bool>()).prop_map(|(peer, online)| Body::Presence(Presence {
            status: if online {
                PresenceStatus::Online
            } else {
                PresenceStatus::Offline
            },
            peer
        })),
        Just(Body::Ping(Ping {})),
        (micros(), micros()).prop_map(|(a, b)| Body::Pong(Pong {
            ping_sent_at_us: a,
            received_at_us: b
        })),
        Just(Body::StatsRequest(StatsRequest {})),
        Just(Body::SutRequest(SutRequest {})),
        (
            peer_info(),
            state,
            any::<u64>(),
            micros(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(peer, state, up, since, rc, nr, bad)| Body::Stats(Stats {
                peer,
                state,
                uptime_ms: up,
                connected_since_us: since,
                reconnects: rc,
                notes_received: nr,
                bad_notes: bad,
                refused_notes: bad / 2,
                signed: bad % 2 == 0,
                run: None
            })),
        Just(Body::Halt(Halt {})),
        Just(Body::Halted(Halted {})),
        (code, any::<String>())
            .prop_map(|(code, message)| Body::Error(ErrorNote { code, message })),
        run_body(),
    ]
}

fn run_id() -> impl Strategy<Value = RunId> {
    segment().prop_map(|s| RunId::new(s).unwrap())
}

fn counters() -> impl Strategy<Value = Counters> {
    prop::array::uniform8(any::<u64>()).prop_map(|c| Counters {
        sent: c[0],
        received: c[1],
        errors: c[2],
        duplicated: c[3],
        out_of_order: c[4],
        foreign: c[5],
        sent_bytes: c[6],
        received_bytes: c[7],
    })
}

fn histograms() -> impl Strategy<Value = EncodedHistograms> {
    (
        any::<String>(),
        any::<String>(),
        any::<String>(),
        any::<Option<String>>(),
    )
        .prop_map(|(a, b, c, d)| EncodedHistograms {
            response_time_us: a,
            service_time_us: b,
            send_lag_us: c,
            publish_latency_us: d,
        })
}

fn sut() -> impl Strategy<Value = SutUrl> {
    prop::string::string_regex(
        "(mqtt://[a-z]{1,8}(:[1-9][0-9]{0,3})?(/[a-z]{1,5})?(\\?qos=[012])?)|(amqp://u:p@[a-z]{1,8}/%2f\\?confirms=true)|(kafka://[a-z]{1,5}:9092,[a-z]{1,5}/[a-z]{1,5}\\?acks=1)",
    )
    .unwrap()
    .prop_map(|s| s.parse().unwrap())
}

fn spec() -> impl Strategy<Value = TestSpec> {
    (
        sut(),
        0.0..1e9f64,
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        any::<u64>(),
        (any::<bool>(), any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(sut, rate, duration_ms, count, warmup_ms, (around, n), (p, c, t))| TestSpec {
                sut,
                rate,
                duration_ms,
                count,
                warmup_ms,
                size: if around {
                    MessageSize::Around(n)
                } else {
                    MessageSize::Fixed(n)
                },
                producers: p,
                consumers: c,
                topics: t,
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

fn run_body() -> impl Strategy<Value = Body> {
    let range = prop::array::uniform3(any::<u32>()).prop_map(|d| IdRange {
        first: d[0],
        stride: d[1],
        count: d[2],
    });
    let producer = range.clone();
    let consumer =
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(id, topic, subscription)| {
            ConsumerPlan {
                id,
                topic,
                subscription,
            }
        });
    let delivery = prop::array::uniform5(any::<u32>()).prop_map(|d| Delivery {
        consumer: d[0],
        producer: d[1],
        producers: d[1] % 7 + 1,
        unique: d[2].into(),
        duplicated: d[3].into(),
        out_of_order: d[4].into(),
    });
    let sent = (
        prop::array::uniform4(any::<u32>()),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(micros()),
    )
        .prop_map(|(d, unsent, held_back, stopped_at_us)| Sent {
            producer: d[0],
            producers: d[0] % 5 + 1,
            topic: d[1],
            sent: d[2].into(),
            unsent,
            held_back,
            errors: d[3].into(),
            stopped_at_us,
        });
    prop_oneof![
        (
            run_id(),
            spec(),
            producer,
            prop::collection::vec(consumer.clone(), 0..3),
            any::<u64>(),
            prop::collection::vec(
                (range, any::<i64>())
                    .prop_map(|(producers, skew_us)| ProducerSkew { producers, skew_us }),
                0..3
            )
        )
            .prop_map(
                |(run, spec, producers, consumers, lease_ms, producer_skews)| {
                    Body::Configure(Configure {
                        run,
                        spec,
                        producers,
                        consumers,
                        lease_ms,
                        producer_skews,
                    })
                }
            ),
        run_id().prop_map(|run| Body::Renew(Renew { run })),
        run_id().prop_map(|run| Body::Configured(Configured { run })),
        (run_id(), micros()).prop_map(|(run, start_at_us)| Body::Start(Start { run, start_at_us })),
        run_id().prop_map(|run| Body::Started(Started { run })),
        run_id().prop_map(|run| Body::Stop(Stop { run })),
        run_id().prop_map(|run| Body::Stopping(Stopping { run })),
        run_id().prop_map(|run| Body::Resume(Resume { run })),
        run_id().prop_map(|run| Body::Resumed(Resumed { run })),
        (
            run_id(),
            micros(),
            micros(),
            counters(),
            histograms(),
            any::<(u32, u32, u32)>()
        )
            .prop_map(|(run, a, b, counters, histograms, (second, ap, ac))| {
                Body::RunStats(RunStats {
                    run,
                    second,
                    interval_start_us: a,
                    interval_end_us: b,
                    counters,
                    histograms,
                    active_producers: ap,
                    active_consumers: ac,
                    connections: (second % 2 == 0).then_some(SecondConnections {
                        connected: ap,
                        opened: ac,
                        failed: second,
                    }),
                })
            }),
        (
            run_id(),
            segment(),
            counters(),
            histograms(),
            prop::collection::vec(sent, 0..3),
            prop::collection::vec(delivery, 0..3),
            prop::collection::vec(consumer, 0..3),
            prop::collection::vec((any::<String>(), any::<u64>()), 0..3),
        )
            .prop_map(
                |(run, worker, counters, histograms, sent, deliveries, consumers, errors)| {
                    let errors_len = errors.len();
                    Body::RunResult(RunResult {
                        run,
                        worker: PeerId::new(worker).unwrap(),
                        counters,
                        histograms,
                        sent,
                        deliveries,
                        consumers,
                        errors: errors
                            .into_iter()
                            .map(|(message, count)| ErrorCount { message, count })
                            .collect(),
                        tls_handshake_us: None,
                        connect_us: None,
                        subscribe_us: None,
                        connections: (errors_len % 2 == 0).then(|| ConnectionStats {
                            opened: 3,
                            reconnects: 1,
                            failures: [("refused".to_owned(), 2)].into(),
                            per_second: vec![(1_700_000_000, 3)],
                            ..Default::default()
                        }),
                        segments: (errors_len % 3 == 1).then(|| SegmentTallies {
                            sent: vec![TopicSegments {
                                topic: 1,
                                sent: vec![1, 2],
                            }],
                            received: vec![ConsumerSegments {
                                consumer: 0,
                                unique: vec![1, 1],
                                duplicated: vec![0, 3],
                            }],
                            response_time_us: vec![String::new(), String::new()],
                        }),
                        data_plane: (errors_len % 2 == 0).then(|| {
                            maestro_protocol::DataPlaneLoad {
                                wall_us: 8_000_000,
                                threads: vec![maestro_protocol::ThreadLoad {
                                    cpu_us: 1_234,
                                    waited_us: 56,
                                    wakes: Some(7),
                                }],
                            }
                        }),
                        part: (errors_len % 4 == 3)
                            .then_some(maestro_protocol::ResultPart { index: 1, count: 3 }),
                    })
                }
            ),
        (
            micros(),
            prop::collection::vec(
                (
                    any::<String>(),
                    prop::sample::select(SourceKind::ALL.to_vec()),
                    prop::option::of(any::<String>()),
                    prop::collection::vec(
                        (
                            any::<String>(),
                            prop::option::of(any::<String>()),
                            any::<bool>(),
                            -1e15f64..1e15
                        ),
                        0..4
                    ),
                ),
                0..3
            ),
        )
            .prop_map(|(at_us, samples)| {
                Body::SutStats(SutStats {
                    at_us,
                    samples: samples
                        .into_iter()
                        .map(|(source, kind, error, metrics)| SourceSample {
                            source,
                            kind,
                            error,
                            metrics: metrics
                                .into_iter()
                                .map(|(name, label, counter, value)| Metric {
                                    name,
                                    label,
                                    kind: if counter {
                                        MetricKind::Counter
                                    } else {
                                        MetricKind::Gauge
                                    },
                                    value,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            }),
        (run_id(), any::<u32>(), segment(), any::<u64>()).prop_map(
            |(run, fault, action, duration_ms)| Body::Inject(Inject {
                run,
                fault,
                action: ActionName::new(action).unwrap(),
                duration_ms,
            })
        ),
        (
            run_id(),
            any::<u32>(),
            micros(),
            prop::option::of(micros()),
            prop::option::of(any::<String>())
        )
            .prop_map(|(run, fault, issued_at_us, confirmed_at_us, error)| {
                Body::Injected(Injected {
                    run,
                    fault,
                    issued_at_us,
                    confirmed_at_us,
                    error,
                })
            }),
        (
            run_id(),
            any::<u32>(),
            segment(),
            micros(),
            prop::option::of(any::<String>())
        )
            .prop_map(|(run, fault, action, healed_at_us, error)| {
                Body::FaultHealed(FaultHealed {
                    run,
                    fault,
                    action: ActionName::new(action).unwrap(),
                    healed_at_us,
                    error,
                })
            }),
    ]
}

fn note() -> impl Strategy<Value = Note> {
    (
        any::<u128>(),
        prop::option::of(any::<u128>()),
        prop::option::of(any::<String>()),
        segment(),
        role(),
        any::<String>(),
        micros(),
        body(),
        any::<u16>(),
    )
        .prop_map(
            |(id, corr, reply_to, sid, role, name, at, body, minor)| Note {
                version: ProtocolVersion {
                    major: PROTOCOL_VERSION.major,
                    minor,
                },
                id: NoteId(uuid::Uuid::from_u128(id)),
                correlation_id: corr.map(|c| NoteId(uuid::Uuid::from_u128(c))),
                reply_to,
                sender: Sender {
                    id: PeerId::new(sid).unwrap(),
                    role,
                    name,
                },
                sent_at_us: at,
                body,
            },
        )
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(note in note()) {
        let bytes = encode(&note);
        prop_assume!(bytes.len() <= MAX_NOTE_BYTES);
        prop_assert_eq!(decode(&bytes).unwrap(), note);
    }

    #[test]
    fn signed_notes_decode_and_verify(note in note()) {
        let key = maestro_protocol::signing::SigningKey::generate();
        let topic = "maestro/v1/c/req/all";
        let sealed = key.seal(topic, encode(&note));
        prop_assume!(sealed.len() <= MAX_NOTE_BYTES);
        prop_assert_eq!(decode(&sealed).unwrap(), note);
        prop_assert!(key.verifying_key().open(topic, &sealed).is_ok());
        prop_assert!(key.verifying_key().open("maestro/v1/c/req/role/worker", &sealed).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }
}
