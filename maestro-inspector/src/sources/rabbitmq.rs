//! The RabbitMQ management HTTP API: overview counters and queue totals, per-queue depth
//! and consumers, node memory, file descriptors and sockets.
//!
//! RabbitMQ refreshes these every `collect_statistics_interval` (5 s by default; set
//! 1000 ms for per-second resolution). Fields RabbitMQ leaves out (a counter nothing has
//! moved yet) are left out here too, never read as 0.

use maestro_protocol::Metric;
use maestro_protocol::inspect::{MAX_METRICS_PER_SOURCE, names};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug)]
pub struct Rabbitmq {
    base: String,
    auth: Option<String>,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Overview {
    #[serde(default)]
    message_stats: MessageStats,
    #[serde(default)]
    queue_totals: QueueTotals,
    #[serde(default)]
    object_totals: ObjectTotals,
}

#[derive(Deserialize, Default)]
struct MessageStats {
    publish: Option<f64>,
    deliver_get: Option<f64>,
    ack: Option<f64>,
    redeliver: Option<f64>,
}

#[derive(Deserialize, Default)]
struct QueueTotals {
    messages: Option<f64>,
    messages_ready: Option<f64>,
    messages_unacknowledged: Option<f64>,
}

#[derive(Deserialize, Default)]
struct ObjectTotals {
    connections: Option<f64>,
    channels: Option<f64>,
    consumers: Option<f64>,
    queues: Option<f64>,
}

#[derive(Deserialize)]
struct Node {
    name: String,
    mem_used: Option<f64>,
    fd_used: Option<f64>,
    sockets_used: Option<f64>,
    proc_used: Option<f64>,
}

#[derive(Deserialize)]
struct Queue {
    name: String,
    vhost: String,
    messages: Option<f64>,
    consumers: Option<f64>,
}

impl Rabbitmq {
    pub fn new(url: &url::Url) -> Self {
        let mut base = url.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let base = base.as_str().trim_end_matches('/').to_owned();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(700)))
            .build()
            .into();
        Self {
            base,
            auth: super::basic_auth(url),
            agent,
        }
    }

    pub async fn sample(&mut self) -> Result<Vec<Metric>, String> {
        let (base, auth, agent) = (self.base.clone(), self.auth.clone(), self.agent.clone());
        tokio::task::spawn_blocking(move || read(&agent, &base, auth.as_deref()))
            .await
            .map_err(|e| format!("reader failed: {e}"))?
    }
}

fn get<T: serde::de::DeserializeOwned>(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    auth: Option<&str>,
) -> Result<T, String> {
    let url = format!("{base}{path}");
    let mut request = agent.get(&url);
    if let Some(a) = auth {
        request = request.header("Authorization", a);
    }
    let mut response = request.call().map_err(|e| format!("GET {url}: {e}"))?;
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {url}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("GET {url}: unexpected answer: {e}"))
}

fn read(agent: &ureq::Agent, base: &str, auth: Option<&str>) -> Result<Vec<Metric>, String> {
    let o: Overview = get(agent, base, "/api/overview", auth)?;
    let nodes: Vec<Node> = get(agent, base, "/api/nodes", auth)?;
    let queues: Vec<Queue> = get(
        agent,
        base,
        "/api/queues?columns=name,vhost,messages,consumers",
        auth,
    )?;
    let mut m = Vec::new();
    let mut put = |metric: fn(&str, f64) -> Metric, name: &str, v: Option<f64>| {
        if let Some(v) = v {
            m.push(metric(name, v));
        }
    };
    put(
        Metric::counter,
        names::MESSAGES_RECEIVED,
        o.message_stats.publish,
    );
    put(
        Metric::counter,
        names::MESSAGES_SENT,
        o.message_stats.deliver_get,
    );
    put(Metric::counter, "messages_acked", o.message_stats.ack);
    put(
        Metric::counter,
        "messages_redelivered",
        o.message_stats.redeliver,
    );
    put(Metric::gauge, names::QUEUE_DEPTH, o.queue_totals.messages);
    put(
        Metric::gauge,
        "messages_ready",
        o.queue_totals.messages_ready,
    );
    put(
        Metric::gauge,
        "messages_unacked",
        o.queue_totals.messages_unacknowledged,
    );
    put(
        Metric::gauge,
        names::CLIENTS_CONNECTED,
        o.object_totals.connections,
    );
    put(Metric::gauge, "channels", o.object_totals.channels);
    put(Metric::gauge, "consumers", o.object_totals.consumers);
    put(Metric::gauge, "queues", o.object_totals.queues);
    let sum =
        |f: fn(&Node) -> Option<f64>| -> Option<f64> { nodes.iter().map(f).sum::<Option<f64>>() };
    m.push(Metric::gauge("nodes", nodes.len() as f64));
    for (name, v) in [
        (names::MEMORY_BYTES, sum(|n| n.mem_used)),
        ("fd_used", sum(|n| n.fd_used)),
        ("sockets_used", sum(|n| n.sockets_used)),
        ("erlang_processes", sum(|n| n.proc_used)),
    ] {
        if let Some(v) = v {
            m.push(Metric::gauge(name, v));
        }
    }
    if nodes.len() > 1 {
        for n in &nodes {
            if let Some(v) = n.mem_used {
                m.push(Metric::gauge(names::MEMORY_BYTES, v).labelled(&n.name));
            }
        }
    }
    // The deepest queues first, when there are more than a sample holds.
    let mut queues = queues;
    queues.sort_by(|a, b| {
        b.messages
            .unwrap_or(0.0)
            .total_cmp(&a.messages.unwrap_or(0.0))
    });
    for q in &queues {
        if m.len() + 2 > MAX_METRICS_PER_SOURCE {
            break;
        }
        let label = if q.vhost == "/" {
            q.name.clone()
        } else {
            format!("{}/{}", q.vhost, q.name)
        };
        if let Some(v) = q.messages {
            m.push(Metric::gauge(names::QUEUE_DEPTH, v).labelled(&label));
        }
        if let Some(v) = q.consumers {
            m.push(Metric::gauge("consumers", v).labelled(label));
        }
    }
    Ok(m)
}
