//! An MQTT broker's `$SYS` topics (Mosquitto): a subscriber keeps the latest value of
//! each, and a sample reads them. Mosquitto publishes `$SYS` every `sys_interval`
//! seconds (default 10; set 1 for per-second resolution) and only what changed, but its
//! uptime changes every time: no `$SYS` message for [`STALE_AFTER`] is a gap.
//!
//! Mosquitto updates `$SYS` only once more than `sys_interval` has passed, so with
//! `sys_interval 1` a beat comes every one or two seconds. A sample with no `$SYS` message
//! since the one before has no news and is left out: the controller then takes a counter's
//! rate over the time between the broker's beats, and a steady 500/s reads as ~500/s each
//! time instead of 0, 1000, 0, 1000.

use maestro_protocol::Metric;
use maestro_protocol::inspect::names;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// No `$SYS` message for this long (over the default 10 s interval) means the broker is
/// not answering, until its uptime ticks show its real interval.
const STALE_AFTER: Duration = Duration::from_secs(15);
/// The topic that changes at every `$SYS` interval.
const UPTIME: &str = "$SYS/broker/uptime";

/// `$SYS` topic, metric name, counter (else gauge).
const TOPICS: &[(&str, &str, bool)] = &[
    (
        "$SYS/broker/clients/connected",
        names::CLIENTS_CONNECTED,
        false,
    ),
    (
        "$SYS/broker/publish/messages/received",
        names::MESSAGES_RECEIVED,
        true,
    ),
    (
        "$SYS/broker/publish/messages/sent",
        names::MESSAGES_SENT,
        true,
    ),
    (
        "$SYS/broker/publish/messages/dropped",
        "messages_dropped",
        true,
    ),
    ("$SYS/broker/bytes/received", "bytes_received", true),
    ("$SYS/broker/bytes/sent", "bytes_sent", true),
    ("$SYS/broker/messages/received", "packets_received", true),
    ("$SYS/broker/messages/sent", "packets_sent", true),
    ("$SYS/broker/heap/current", names::MEMORY_BYTES, false),
    ("$SYS/broker/store/messages/count", "messages_stored", false),
    ("$SYS/broker/subscriptions/count", "subscriptions", false),
];

#[derive(Debug, Default)]
struct Latest {
    values: HashMap<&'static str, f64>,
    /// When any `$SYS` message last arrived.
    heard: Option<Instant>,
    /// The last uptime tick, and the time between the last two: the broker's interval.
    tick: Option<Instant>,
    interval: Option<Duration>,
    /// Why the connection is down, while it is.
    down: Option<String>,
}

#[derive(Debug)]
pub struct MqttSys {
    latest: Arc<Mutex<Latest>>,
    /// When the last `$SYS` message reported in a sample arrived.
    reported: Option<Instant>,
}

fn lock(m: &Mutex<Latest>) -> std::sync::MutexGuard<'_, Latest> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MqttSys {
    pub fn open(
        url: &url::Url,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
    ) -> Self {
        let latest = Arc::new(Mutex::new(Latest {
            down: Some("not connected yet".into()),
            ..Latest::default()
        }));
        let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = url.port().unwrap_or(1883);
        let id = format!("maestro-inspector-{:08x}", std::process::id() ^ port as u32);
        let mut options = MqttOptions::new(id, host, port);
        options.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = super::credentials(url) {
            options.set_credentials(user, password);
        }
        let (client, eventloop) = AsyncClient::new(options, 16);
        let target = super::redacted(url);
        tasks.spawn(follow(
            client,
            eventloop,
            latest.clone(),
            shutdown.clone(),
            target,
        ));
        Self {
            latest,
            reported: None,
        }
    }

    /// The latest values, or `None` when no `$SYS` message came since the last sample.
    pub fn sample(&mut self) -> Result<Option<Vec<Metric>>, String> {
        let latest = lock(&self.latest);
        if let Some(why) = &latest.down {
            return Err(why.clone());
        }
        // Silent for well over its own interval: the broker is not answering (stopped,
        // or cut off), even though the connection is still open.
        let stale_after = latest.interval.map_or(STALE_AFTER, |i| {
            (i * 5 / 2 + Duration::from_millis(500)).min(STALE_AFTER)
        });
        match latest.heard {
            None => return Err("no $SYS message yet".into()),
            Some(t) if t.elapsed() > stale_after => {
                return Err(format!("no $SYS message for {} s", t.elapsed().as_secs()));
            }
            Some(t) if self.reported == Some(t) => return Ok(None),
            Some(t) => self.reported = Some(t),
        }
        Ok(Some(
            TOPICS
                .iter()
                .filter_map(|(_, name, counter)| {
                    let v = *latest.values.get(name)?;
                    Some(if *counter {
                        Metric::counter(name, v)
                    } else {
                        Metric::gauge(name, v)
                    })
                })
                .collect(),
        ))
    }
}

/// The leading number of a `$SYS` payload (`"12"`, `"12 seconds"`, `"0.5"`).
fn number(payload: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(payload).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

async fn follow(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    latest: Arc<Mutex<Latest>>,
    shutdown: CancellationToken,
    target: String,
) {
    let mut warned = false;
    let mut connected = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                if client.try_subscribe("$SYS/#", QoS::AtMostOnce).is_err() {
                    warn!(%target, "could not subscribe to $SYS/#");
                }
                lock(&latest).down = None;
                warned = false;
                debug!(%target, "reading $SYS");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let mut l = lock(&latest);
                let now = Instant::now();
                l.heard = Some(now);
                if p.topic == UPTIME {
                    if let Some(prev) = l.tick {
                        l.interval = Some(now - prev);
                    }
                    l.tick = Some(now);
                }
                if let Some((_, name, _)) = TOPICS.iter().find(|(t, _, _)| *t == p.topic)
                    && let Some(v) = number(&p.payload)
                {
                    l.values.insert(name, v);
                }
            }
            Ok(_) => {}
            Err(e) => {
                connected = false;
                let why = format!("{target}: {e}");
                if !warned {
                    warn!(source = "mqtt-sys", reason = %why, "cannot read $SYS; retrying");
                    warned = true;
                }
                {
                    let mut l = lock(&latest);
                    l.down = Some(why);
                    l.values.clear();
                    l.tick = None;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    if connected {
        maestro_control::session::goodbye(&client, &mut eventloop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_without_a_new_sys_message_has_no_news() {
        let latest = Arc::new(Mutex::new(Latest::default()));
        let mut sys = MqttSys {
            latest: latest.clone(),
            reported: None,
        };
        assert_eq!(sys.sample(), Err("no $SYS message yet".to_owned()));
        {
            let mut l = lock(&latest);
            l.heard = Some(Instant::now());
            l.values.insert(names::MESSAGES_RECEIVED, 500.0);
        }
        let first = sys.sample().unwrap().unwrap();
        assert_eq!(
            first,
            vec![Metric::counter(names::MESSAGES_RECEIVED, 500.0)]
        );
        // The broker's beat has not come again: no news, not a repeat of old figures.
        assert_eq!(sys.sample(), Ok(None));
        {
            let mut l = lock(&latest);
            l.heard = Some(Instant::now() + Duration::from_millis(1));
            l.values.insert(names::MESSAGES_RECEIVED, 1500.0);
        }
        assert_eq!(
            sys.sample().unwrap().unwrap(),
            vec![Metric::counter(names::MESSAGES_RECEIVED, 1500.0)]
        );
    }

    #[test]
    fn sys_payloads_are_read_as_numbers() {
        assert_eq!(super::number(b"12345"), Some(12345.0));
        assert_eq!(super::number(b"17 seconds"), Some(17.0));
        assert_eq!(super::number(b"mosquitto version 2.0.11"), None);
    }
}
