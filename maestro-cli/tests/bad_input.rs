//! Bad input on the control topics: every peer keeps running, answers with an error note
//! where there is a reply address, counts it, and logs each kind once.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::{Body, Note, Role, UnixMicros};
use maestro_protocol::{ClusterId, MAX_NOTE_BYTES, PeerId, Ping, Sender, Target, Topics};
use maestro_testkit::{TestBroker, run_cli, spawn_peer, unique_cluster, wait_for};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn client(port: u16, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(8 << 20, 8 << 20);
    AsyncClient::new(o, 64)
}

fn ping_value(topics: &Topics, me: &PeerId) -> Value {
    let note = Note::new(
        Sender {
            id: me.clone(),
            role: Role::Controller,
            name: "attacker".into(),
        },
        Body::Ping(Ping {}),
        UnixMicros(1),
    )
    .with_reply_to(topics.reply(me));
    serde_json::to_value(note).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_notes_are_answered_counted_logged_once_and_survived() {
    let broker = TestBroker::start(&[]).unwrap();
    let url = broker.url();
    let cluster: ClusterId = unique_cluster();
    let worker = spawn_peer("worker", &url, &cluster, &["--name", "w"]).unwrap();
    let inspector = spawn_peer("inspector", &url, &cluster, &["--name", "i"]).unwrap();
    let topics = Topics::new(&cluster);
    let me = PeerId::new("attacker-1").unwrap();
    let c = cluster.to_string();
    let ping = |extra: &[&str]| {
        let mut args = vec!["-m", url.as_str(), "--cluster", c.as_str(), "-o", "json"];
        args.extend_from_slice(extra);
        run_cli(&args, Duration::from_secs(20)).unwrap()
    };
    // Both peers answer before the bad notes go out (one answering is not enough: the
    // other may still be connecting, and would miss them).
    assert!(wait_for(Duration::from_secs(15), || {
        let run = ping(&["ping"]);
        run.code == Some(0)
            && serde_json::from_str::<Vec<Value>>(&run.stdout).is_ok_and(|peers| peers.len() == 2)
    }));

    let (attacker, mut events) = client(broker.port, me.as_str());
    attacker
        .subscribe(topics.reply(&me), QoS::AtLeastOnce)
        .await
        .unwrap();
    let all = topics.request(&Target::All);
    let good = ping_value(&topics, &me);

    let mut unknown = good.clone();
    unknown["body"] = json!({"type": "launch_rockets", "count": 3});
    let mut newer = good.clone();
    newer["version"] = json!({"major": 2, "minor": 0});
    let mut wrong_type = good.clone();
    wrong_type["sent_at_us"] = json!("yesterday");
    let mut foreign_reply = good.clone();
    foreign_reply["reply_to"] = json!("somewhere/else");
    let mut oversize = good.clone();
    oversize["padding"] = json!("x".repeat(MAX_NOTE_BYTES + 10));

    let bad: Vec<Vec<u8>> = vec![
        b"\x00\xff\xfe garbage".to_vec(),
        b"{\"truncated\": ".to_vec(),
        serde_json::to_vec(&unknown).unwrap(),
        serde_json::to_vec(&unknown).unwrap(),
        serde_json::to_vec(&newer).unwrap(),
        serde_json::to_vec(&wrong_type).unwrap(),
        serde_json::to_vec(&foreign_reply).unwrap(),
        serde_json::to_vec(&oversize).unwrap(),
    ];
    for payload in &bad {
        attacker
            .publish(&all, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    // Every peer answers each bad note that has a usable reply address: 2 unknown type,
    // 1 newer version, 1 wrong field type, 1 oversize.
    let expected_per_peer = 5;
    let mut codes: BTreeMap<(String, String), usize> = BTreeMap::new();
    let collect = async {
        while codes.values().sum::<usize>() < 2 * expected_per_peer {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                let note = maestro_protocol::decode(&p.payload).expect("a valid reply");
                let Body::Error(e) = note.body else {
                    panic!("not an error: {note:?}")
                };
                assert!(
                    note.correlation_id.is_some(),
                    "error reply without correlation id"
                );
                let code = serde_json::to_value(e.code)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned();
                *codes.entry((note.sender.name, code)).or_default() += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .unwrap_or_else(|_| panic!("error replies so far: {codes:?}"));
    for peer in ["w", "i"] {
        for (code, n) in [
            ("unknown_type", 2),
            ("unsupported_version", 1),
            ("malformed", 1),
            ("oversize", 1),
        ] {
            assert_eq!(
                codes.get(&(peer.into(), code.into())),
                Some(&n),
                "{peer} {code}: {codes:?}"
            );
        }
    }

    // A payload above the broker's own limit costs the sender its connection, nobody else.
    let (big, mut big_events) = client(broker.port, "attacker-2");
    big.publish(&all, QoS::AtMostOnce, false, vec![b'x'; 3 << 20])
        .await
        .unwrap();
    let dropped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if big_events.poll().await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(dropped.is_ok(), "the broker kept a client that sent 3 MiB");

    // Both peers still answer, and counted every bad note.
    let run = ping(&["stats"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let stats: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(stats.len(), 2);
    for s in &stats {
        assert_eq!(s["bad_notes"], bad.len(), "{s}");
    }
    // One warning per kind of bad note, not one per note.
    for proc in [&worker, &inspector] {
        let log = proc.log_text();
        let warnings = log
            .lines()
            .filter(|l| l.contains("bad note on a control topic"))
            .count();
        assert_eq!(warnings, 4, "{}:\n{log}", proc.name);
        for code in ["Malformed", "UnknownType", "UnsupportedVersion", "Oversize"] {
            assert!(
                log.contains(&format!("code={code}")),
                "{code} not logged:\n{log}"
            );
        }
    }
}
