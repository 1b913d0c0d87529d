//! The embedded broker enforces its connection limit and its payload limit.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_broker::{BrokerConfig, start};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet};
use std::time::Duration;

fn client(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(o, 8)
}

/// True when the client gets a CONNACK within two seconds.
async fn connects(eventloop: &mut EventLoop) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await,
        Ok(Ok(Event::Incoming(Packet::ConnAck(_))))
    )
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        max_connections: 3,
        ..Default::default()
    };
    start(&config).await.unwrap();
    // start() returns once its probe has left (the broker closed it): three clients
    // fit, the fourth does not.
    let mut held = Vec::new();
    for i in 0..3 {
        let (c, mut e) = client(port, &format!("c{i}"));
        assert!(connects(&mut e).await, "client {i} refused below the limit");
        // Keep polling so the connection stays alive.
        held.push((
            c,
            tokio::spawn(async move { while e.poll().await.is_ok() {} }),
        ));
    }
    let (_c, mut over) = client(port, "over-the-limit");
    assert!(
        !connects(&mut over).await,
        "a fourth client was accepted with a limit of 3"
    );
}

#[test]
fn default_limit_is_at_least_ten_thousand() {
    assert!(BrokerConfig::default().max_connections >= 10_000);
    let rumqttd = maestro_broker::rumqttd_config(
        &BrokerConfig::default(),
        BrokerConfig::default().listen,
        None,
    );
    assert_eq!(
        rumqttd.router.max_connections,
        BrokerConfig::default().max_connections
    );
}
