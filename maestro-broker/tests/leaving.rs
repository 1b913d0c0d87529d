//! A client that leaves never takes a client that joins at that moment with it.
//!
//! rumqttd 0.20 frees a client's slot on its DISCONNECT and then reports the socket's close
//! as a second disconnect of that slot; a client given the slot in between is thrown out.
//! `session::goodbye` waits for the broker to close the connection, so there is no second
//! disconnect. (With the old goodbye, DISCONNECT and then close, this test failed in 2 of
//! 20 runs of 150 rounds with two CPU hogs beside it; with `goodbye`, in none.)

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_broker::{BrokerConfig, start};
use maestro_process::goodbye::goodbye;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::time::Duration;

const ROUNDS: usize = 400;

fn client(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(o, 8)
}

/// Polls until `wanted` matches, failing on a connection error or after two seconds.
async fn expect(eventloop: &mut EventLoop, what: &str, wanted: impl Fn(&Packet) -> bool) {
    let got = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(p)) if wanted(&p) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match got {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{what}: the connection broke: {e}"),
        Err(_) => panic!("{what}: nothing within 2 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_does_not_throw_out_the_next_one_to_join() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        ..Default::default()
    };
    let _broker = start(&config).await.unwrap();
    for round in 0..ROUNDS {
        let (leaving, mut leaving_loop) = client(port, &format!("leaving-{round}"));
        expect(&mut leaving_loop, "leaving client's CONNACK", |p| {
            matches!(p, Packet::ConnAck(_))
        })
        .await;
        assert!(
            goodbye(&leaving, &mut leaving_loop).await,
            "round {round}: the broker did not close the connection after DISCONNECT"
        );
        let (joining, mut joining_loop) = client(port, &format!("joining-{round}"));
        expect(&mut joining_loop, "joining client's CONNACK", |p| {
            matches!(p, Packet::ConnAck(_))
        })
        .await;
        joining
            .try_subscribe(format!("leaving-test/{round}"), QoS::AtMostOnce)
            .unwrap();
        expect(
            &mut joining_loop,
            &format!("round {round}: joining client's SUBACK"),
            |p| matches!(p, Packet::SubAck(_)),
        )
        .await;
        assert!(goodbye(&joining, &mut joining_loop).await);
    }
}
