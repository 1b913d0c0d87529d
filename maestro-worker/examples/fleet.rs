//! The minimal rumqttc fleet loop that `scripts/bench/producers-memory` measures maestro
//! against: one `AsyncClient` and event loop per client on one current-thread runtime,
//! each client publishing a 100-byte QoS 0 message once a second, phases spread.
//!
//! ```text
//! cargo run --release -p maestro-worker --example fleet -- PORT CLIENTS SECONDS
//! ```
//! Prints `connected N` once every client has its CONNACK, then `sent M` at the end.

use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or_else(|_| usage()))
        .collect();
    let [port, clients, seconds] = args[..] else {
        usage()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let connected = Rc::new(Cell::new(0u64));
        let sent = Rc::new(Cell::new(0u64));
        let payload = vec![b'x'; 100];
        let mut tasks = Vec::new();
        for i in 0..clients {
            let (connected, sent, payload) = (connected.clone(), sent.clone(), payload.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut o = MqttOptions::new(format!("fleet-{i}"), "127.0.0.1", port as u16);
                o.set_keep_alive(Duration::from_secs(30));
                let (client, mut eventloop) = AsyncClient::new(o, 16);
                let mut n = NetworkOptions::new();
                n.set_tcp_nodelay(true);
                eventloop.set_network_options(n);
                loop {
                    if let Ok(Event::Incoming(Packet::ConnAck(_))) = eventloop.poll().await {
                        break;
                    }
                }
                connected.set(connected.get() + 1);
                // Phases spread over the second.
                let start = tokio::time::Instant::now()
                    + Duration::from_micros(i * 1_000_000 / clients.max(1));
                let end = start + Duration::from_secs(seconds);
                let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if tokio::time::Instant::now() >= end { break; }
                            if client.try_publish("fleet/x", QoS::AtMostOnce, false, payload.clone()).is_ok() {
                                sent.set(sent.get() + 1);
                            }
                        }
                        r = eventloop.poll() => if r.is_err() { tokio::time::sleep(Duration::from_millis(200)).await },
                    }
                }
            }));
        }
        while connected.get() < clients {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("connected {clients}");
        for t in tasks {
            let _ = t.await;
        }
        println!("sent {}", sent.get());
    });
}

fn usage() -> ! {
    eprintln!("usage: fleet PORT CLIENTS SECONDS");
    std::process::exit(2)
}
