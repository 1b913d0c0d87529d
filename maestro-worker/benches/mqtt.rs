//! What MQTT 5 and WebSockets cost maestro's producer, against a private Mosquitto with a
//! WebSockets listener started here. Each figure is a ratio against a baseline measured in
//! the same run:
//!
//! 1. Publish cost per variant (MQTT 3.1.1 and 5, over TCP and WebSockets; QoS 0): maestro's
//!    producer (the engine: schedule, a header stamped and a body made per message,
//!    accounting) vs a minimal loop of the same client (`try_send` of one reused payload,
//!    `drive` when full), in messages per CPU-second of the publishing thread
//!    (target >= 0.9x). The minimal loops' own figures side by side show what MQTT 5's
//!    properties and WebSocket frames cost the client.
//! 2. MQTT 5 and MQTT over WebSockets against minimal rumqttc publish loops (rumqttc's v5
//!    client with the same properties; rumqttc's WebSocket transport), as the MQTT 3.1.1
//!    benchmark in `engine` does for 3.1.1 over TCP (target >= 0.9x).
//!
//! ```text
//! cargo bench -p maestro-worker --bench mqtt [-- variants|rumqttc]
//! ```
//!
//! Fleets over each transport (5,000 clients: CPU and RSS beside the plain fleet) are
//! measured with the real binaries by `scripts/fleet/dojot` (`MAESTRO_DOJOT_TRANSPORT`).

#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed

mod common;
use common::*;

use maestro_protocol::{ProducerPlan, RunId};
use maestro_testkit::Mosquitto;
use maestro_worker::driver::mqtt::MqttDriver;
use maestro_worker::driver::{Driver, Producer};
use std::time::{Duration, Instant};

const D: Duration = Duration::from_secs(5);

/// The MQTT 5 properties both sides send.
const V5: &str =
    "version=5&user_properties=site:lab&content_type=application/octet-stream&message_expiry=60s";

/// A minimal loop of maestro's own client: one reused payload, handed over until the
/// client is full, then driven; for `duration`. Returns the messages handed over.
async fn minimal_loop(driver: MqttDriver, duration: Duration) -> u64 {
    let plan = ProducerPlan {
        id: 0,
        topic: 0,
        rate: 0.0,
        count: None,
    };
    let mut p = driver.producer(&plan).await.unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let end = Instant::now() + duration;
    let mut sent = 0u64;
    while Instant::now() < end {
        while p.try_send(payload.clone()).is_ok() {
            sent += 1;
        }
        p.drive().await.unwrap();
    }
    p.close().await;
    sent
}

fn bench_variants(mq: &Mosquitto) {
    let variants = [
        ("MQTT 3.1.1 over TCP", mq.url("bench", "")),
        ("MQTT 5 over TCP", mq.url("bench", V5)),
        ("MQTT 3.1.1 over WebSockets", mq.ws_url("ws", "bench", "")),
        ("MQTT 5 over WebSockets", mq.ws_url("ws", "bench", V5)),
    ];
    let mut minimal = Vec::new();
    for (label, url) in &variants {
        let mut base = Vec::new();
        ratio_rounds(&format!("publish QoS0, {label}"), 0.9, |round| {
            let run = RunId::new(format!("min{round}")).unwrap();
            let driver = MqttDriver::from_url(url, &run).unwrap();
            let (sent_min, cpu_min) = on_thread(move || minimal_loop(driver, D)).join().unwrap();
            base.push(sent_min as f64 / cpu_min.as_secs_f64());
            let run = RunId::new(format!("eng{round}")).unwrap();
            let (sent, cpu, _) =
                run_producer(MqttDriver::from_url(url, &run).unwrap(), url, 0.0, D);
            (sent_min, cpu_min.as_secs_f64(), sent, cpu.as_secs_f64())
        });
        base.sort_by(f64::total_cmp);
        minimal.push((label, base[base.len() / 2]));
    }
    let plain = minimal[0].1;
    for (label, rate) in &minimal {
        println!(
            "the client alone, {label}: {rate:.0} msg/CPU-s, {:.2}x MQTT 3.1.1 over TCP",
            rate / plain
        );
    }
}

/// A minimal rumqttc v5 publisher with the same properties: one task publishing, one
/// polling, one thread, one reused payload.
async fn rumqttc_v5(port: u16, duration: Duration) -> u64 {
    use rumqttc::Outgoing;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut o = MqttOptions::new("bench-minimal-v5", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(o, 1024);
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::ConnAck(_))) = eventloop.poll().await {
                break;
            }
        }
    });
    connected.await.expect("no CONNACK within 10 s");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let props = PublishProperties {
        message_expiry_interval: Some(60),
        user_properties: vec![("site".into(), "lab".into())],
        content_type: Some("application/octet-stream".into()),
        ..Default::default()
    };
    let publisher = tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            if client
                .publish_with_properties(
                    "bench/minimal-v5",
                    QoS::AtMostOnce,
                    false,
                    payload.clone(),
                    props.clone(),
                )
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let end = Instant::now() + duration;
    let mut sent = 0u64;
    while Instant::now() < end {
        if let Ok(Event::Outgoing(Outgoing::Publish(_))) = eventloop.poll().await {
            sent += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    publisher.abort();
    sent
}

/// A minimal rumqttc (3.1.1) publisher over rumqttc's WebSocket transport (the loop of
/// `engine`'s baseline).
async fn rumqttc_ws(port: u16, duration: Duration) -> u64 {
    use rumqttc::{AsyncClient, MqttOptions, Transport};
    let mut o = MqttOptions::new(
        "bench-minimal-ws",
        format!("ws://127.0.0.1:{port}/mqtt"),
        port,
    );
    o.set_transport(Transport::Ws);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, eventloop) = AsyncClient::new(o, 1024);
    publish_minimal(client, eventloop, "bench/minimal-ws".into(), duration).await
}

fn bench_rumqttc(mq: &Mosquitto) {
    let port = mq.port;
    let url = mq.url("bench", V5);
    ratio_rounds("publish QoS0, MQTT 5 vs rumqttc v5", 0.9, |round| {
        let (sent_min, cpu_min) = on_thread(move || rumqttc_v5(port, D)).join().unwrap();
        let run = RunId::new(format!("v5r{round}")).unwrap();
        let (sent, cpu, _) = run_producer(MqttDriver::from_url(&url, &run).unwrap(), &url, 0.0, D);
        (sent_min, cpu_min.as_secs_f64(), sent, cpu.as_secs_f64())
    });
    let ws_port = mq.ws_port.unwrap();
    let url = mq.ws_url("ws", "bench", "");
    ratio_rounds(
        "publish QoS0, MQTT over WebSockets vs rumqttc over WebSockets",
        0.9,
        |round| {
            let (sent_min, cpu_min) = on_thread(move || rumqttc_ws(ws_port, D)).join().unwrap();
            let run = RunId::new(format!("wsr{round}")).unwrap();
            let (sent, cpu, _) =
                run_producer(MqttDriver::from_url(&url, &run).unwrap(), &url, 0.0, D);
            (sent_min, cpu_min.as_secs_f64(), sent, cpu.as_secs_f64())
        },
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let mq = Mosquitto::start_with_websockets("").unwrap();
    println!(
        "against a private Mosquitto on 127.0.0.1:{} (WebSockets on {}); {SIZE}-byte messages, {}s per measurement",
        mq.port,
        mq.ws_port.unwrap(),
        D.as_secs()
    );
    if want("variants") {
        bench_variants(&mq);
    }
    if want("rumqttc") {
        bench_rumqttc(&mq);
    }
}
