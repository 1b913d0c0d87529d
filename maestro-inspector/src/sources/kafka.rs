//! A Kafka cluster through its admin requests: end offsets per partition (the messages
//! each holds so far) and, for every consumer group, its lag: end offset minus committed
//! offset, summed per topic.

use maestro_protocol::Metric;
use maestro_protocol::inspect::{MAX_METRICS_PER_SOURCE, names};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The whole sample must fit in this (the sample timeout is a little longer).
const BUDGET: Duration = Duration::from_millis(700);

pub struct Kafka {
    inner: Arc<Mutex<Clients>>,
}

struct Clients {
    bootstrap: String,
    admin: Option<BaseConsumer>,
    /// One client per consumer group, to read its committed offsets (it never joins).
    groups: HashMap<String, BaseConsumer>,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka").finish_non_exhaustive()
    }
}

impl Kafka {
    /// Reads the cluster at `bootstrap` (`host:port,host:port`).
    pub fn new(bootstrap: &str) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Clients {
                bootstrap: bootstrap.to_owned(),
                admin: None,
                groups: HashMap::new(),
            })),
        }
    }

    pub async fn sample(&mut self) -> Result<Vec<Metric>, String> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = inner.lock().unwrap_or_else(|p| p.into_inner());
            c.read()
        })
        .await
        .map_err(|e| format!("reader failed: {e}"))?
    }
}

fn client(bootstrap: &str, group: Option<&str>) -> Result<BaseConsumer, String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("socket.timeout.ms", "1000")
        .set("log_level", "3");
    if let Some(g) = group {
        config.set("group.id", g);
    }
    config
        .create()
        .map_err(|e| format!("kafka client for {bootstrap}: {e}"))
}

impl Clients {
    fn read(&mut self) -> Result<Vec<Metric>, String> {
        let started = Instant::now();
        let left = || {
            BUDGET
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(50))
        };
        if self.admin.is_none() {
            self.admin = Some(client(&self.bootstrap, None)?);
        }
        let admin = self.admin.as_ref().ok_or("no client")?;
        let metadata = admin
            .fetch_metadata(None, left())
            .map_err(|e| format!("{}: metadata: {e}", self.bootstrap))?;
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for topic in metadata.topics() {
            if topic.name().starts_with("__") {
                continue;
            }
            for p in topic.partitions() {
                let (_, high) = admin
                    .fetch_watermarks(topic.name(), p.id(), left())
                    .map_err(|e| {
                        format!(
                            "{}: end offset of {}/{}: {e}",
                            self.bootstrap,
                            topic.name(),
                            p.id()
                        )
                    })?;
                ends.insert((topic.name().to_owned(), p.id()), high);
            }
        }
        let mut m = vec![
            Metric::counter(
                names::MESSAGES_RECEIVED,
                ends.values().map(|v| *v as f64).sum(),
            ),
            Metric::gauge(
                "topics",
                metadata
                    .topics()
                    .iter()
                    .filter(|t| !t.name().starts_with("__"))
                    .count() as f64,
            ),
            Metric::gauge("partitions", ends.len() as f64),
        ];
        let groups = admin
            .fetch_group_list(None, left())
            .map_err(|e| format!("{}: consumer groups: {e}", self.bootstrap))?;
        let names_: Vec<String> = groups
            .groups()
            .iter()
            .map(|g| g.name().to_owned())
            .collect();
        self.groups.retain(|g, _| names_.contains(g));
        let mut lags: Vec<Metric> = Vec::new();
        for group in &names_ {
            if !self.groups.contains_key(group) {
                self.groups
                    .insert(group.clone(), client(&self.bootstrap, Some(group))?);
            }
            let Some(consumer) = self.groups.get(group) else {
                continue;
            };
            let mut tpl = TopicPartitionList::new();
            for (t, p) in ends.keys() {
                tpl.add_partition(t, *p);
            }
            let committed = consumer
                .committed_offsets(tpl, left())
                .map_err(|e| format!("{}: offsets of group {group}: {e}", self.bootstrap))?;
            let mut per_topic: BTreeMap<String, i64> = BTreeMap::new();
            for e in committed.elements() {
                if let Offset::Offset(at) = e.offset()
                    && let Some(end) = ends.get(&(e.topic().to_owned(), e.partition()))
                {
                    *per_topic.entry(e.topic().to_owned()).or_default() += (end - at).max(0);
                }
            }
            if per_topic.is_empty() {
                continue;
            }
            lags.push(
                Metric::gauge(names::CONSUMER_LAG, per_topic.values().sum::<i64>() as f64)
                    .labelled(group.clone()),
            );
            for (topic, lag) in per_topic {
                lags.push(
                    Metric::gauge(names::CONSUMER_LAG, lag as f64)
                        .labelled(format!("{group}/{topic}")),
                );
            }
        }
        m.extend(lags);
        for ((t, p), high) in &ends {
            if m.len() >= MAX_METRICS_PER_SOURCE {
                break;
            }
            m.push(Metric::counter("end_offset", *high as f64).labelled(format!("{t}/{p}")));
        }
        Ok(m)
    }
}
