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
        Just(ErrorCode::Unsupported)
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
                bad_notes: bad
            })),
        Just(Body::Halt(Halt {})),
        Just(Body::Halted(Halted {})),
        (code, any::<String>())
            .prop_map(|(code, message)| Body::Error(ErrorNote { code, message })),
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
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }
}
