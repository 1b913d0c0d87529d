//! `maestro-cli start`: the flags that make a test spec, and the summary as a table. The
//! run itself is `maestro_controller::run::run_test`.

use maestro_controller::run::RunError;
use maestro_protocol::{MessageSize, Segment, SutUrl, TestSpec};
use maestro_report::format::micros;
use maestro_report::{Percentiles, RunSummary};
use std::path::PathBuf;
use std::time::Duration;

/// The flags of `maestro-cli start`; they build a [`TestSpec`].
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// System under test, e.g. mqtt://127.0.0.1:1884/bench?qos=1; repeat it for the nodes
    /// of a cluster (URLs that differ only in host:port; MQTT clients go to them round
    /// robin).
    #[arg(long, env = "MAESTRO_SUT", required = true, value_delimiter = ' ')]
    pub sut: Vec<SutUrl>,
    /// Consumers on another protocol of the same broker: producers speak --sut's, consumers
    /// this URL's (mqtt -> amqp, amqp -> mqtt, amqp|amqp10 -> rabbitmq-stream on one RabbitMQ;
    /// stomp -> mqtt, mqtt -> stomp with dest=topic on one RabbitMQ or ActiveMQ).
    #[arg(long, env = "MAESTRO_CONSUMER_SUT", conflicts_with = "clients", value_parser = boxed_sut)]
    pub consumer_sut: Option<Box<SutUrl>>,
    #[command(flatten)]
    pub sut_password: crate::cli::SutPasswordArgs,
    /// Total messages per second over all producers (0 = as fast as possible); the mean
    /// rate of a shaped --arrival [default: 1000, or the mean a sine or steps arrival
    /// fixes]
    #[arg(long, env = "MAESTRO_RATE")]
    pub rate: Option<f64>,
    /// How messages arrive over time: uniform, poisson, bursts:period=D[,on=D][,messages=N]
    /// (all at once each period, or spread over its first `on`), sine:low=R,high=R,period=D
    /// (from low to high and back over each period) or steps:R:D[,R:D...] (repeated);
    /// every message keeps its intended send time. Shaped arrivals need a --duration.
    #[arg(long, env = "MAESTRO_ARRIVAL", default_value = "uniform")]
    pub arrival: maestro_protocol::Arrival,
    /// How long to send [default: 10s unless --count is given].
    #[arg(short, long, env = "MAESTRO_DURATION", value_parser = humantime::parse_duration, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// How many messages to send in total.
    #[arg(long, env = "MAESTRO_COUNT")]
    pub count: Option<u64>,
    /// Excluded from latency and rates at the start of the run.
    #[arg(long, env = "MAESTRO_WARMUP", value_parser = humantime::parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Message size in bytes: N, or ~N for sizes spread over N/2..=3N/2.
    #[arg(long, env = "MAESTRO_SIZE", default_value = "256")]
    pub size: MessageSize,
    /// Producers in total.
    #[arg(long, env = "MAESTRO_PRODUCERS", default_value_t = 1)]
    pub producers: u32,
    /// Consumers in total, spread over the topics round robin. Where they compete (an AMQP
    /// queue, a Kafka group, a shared MQTT subscription) a topic's consumers share its
    /// messages; otherwise each gets every message of its topic.
    #[arg(long, env = "MAESTRO_CONSUMERS", default_value_t = 1)]
    pub consumers: u32,
    /// Subscriptions per topic where consumers compete: a topic's consumers are dealt
    /// round robin over this many queues, consumer groups or shared subscriptions, each
    /// getting every message once (OpenMessaging Benchmark's subscriptionsPerTopic)
    #[arg(long, env = "MAESTRO_SUBSCRIPTIONS", value_name = "N")]
    pub subscriptions: Option<u32>,
    /// Topics; producers and consumers are spread over them round robin.
    #[arg(long, env = "MAESTRO_TOPICS", default_value_t = 1)]
    pub topics: u32,
    /// A backlog test: hold the consumers until this many GiB are waiting in the SUT,
    /// then resume them while producers go on (OpenMessaging Benchmark's
    /// consumerBacklogSizeGB; AMQP and Kafka)
    #[arg(long, env = "MAESTRO_CONSUMER_BACKLOG_SIZE_GB", value_name = "GIB")]
    pub consumer_backlog_size_gb: Option<f64>,
    /// Only the peers of this group.
    #[arg(long, env = "MAESTRO_TARGET_GROUP")]
    pub group: Option<Segment>,
    #[command(flatten)]
    pub roles: crate::cli::RoleArgs,
    /// Serve the run's metrics for Prometheus on PORT or HOST:PORT (`/metrics`,
    /// OpenMetrics; a bare port binds to 127.0.0.1) while the run goes on
    #[arg(long, env = "MAESTRO_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<maestro_control::metrics::MetricsListen>,
    /// A fault during the run, AT+DURATION:ACTION (for example 5s+2s:pause-broker): the
    /// inspector that declared ACTION in its --faults file runs it AT after the start and
    /// heals it DURATION later. Repeat for several.
    #[arg(
        long = "fault",
        env = "MAESTRO_FAULT",
        value_delimiter = ' ',
        value_name = "FAULT"
    )]
    pub faults: Vec<maestro_controller::faults::FaultPlan>,
    /// Connections opened per second across the cluster while configuring (the hatch
    /// rate) [default: every client at once]
    #[arg(long, env = "MAESTRO_CONNECT_RATE")]
    pub connect_rate: Option<f64>,
    /// A device fleet of this many MQTT clients (instead of --producers): each client is
    /// one connection that publishes every --interval and may subscribe (--subscribe).
    #[arg(long, env = "MAESTRO_CLIENTS", conflicts_with_all = ["producers", "rate", "topics"])]
    pub clients: Option<u32>,
    /// Time between two messages of one fleet client; clients' phases are spread evenly
    /// over it.
    #[arg(long, env = "MAESTRO_FLEET_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s", requires = "clients")]
    pub interval: Duration,
    /// Moves each send time of a fleet client by up to this much at random, either way
    /// (under half the interval).
    #[arg(long, env = "MAESTRO_JITTER", value_parser = humantime::parse_duration, default_value = "0s", requires = "clients")]
    pub jitter: Duration,
    /// Client id template of a fleet client: {i} is its index, {run} the run id.
    #[arg(
        long,
        env = "MAESTRO_CLIENT_ID",
        default_value = "maestro-{run}-{i}",
        requires = "clients"
    )]
    pub client_id: String,
    /// Topic template a fleet client publishes to [default: <base topic>/{run}/fleet/{i}];
    /// consumers subscribe to it with + in place of each level that holds {i}.
    #[arg(long, env = "MAESTRO_TOPIC", requires = "clients")]
    pub topic: Option<String>,
    /// Topic template a fleet client subscribes to on its own connection.
    #[arg(long, env = "MAESTRO_SUBSCRIBE", requires = "clients")]
    pub subscribe: Option<String>,
    /// JSON file a fleet client's messages are made from, with placeholders {i}, {run},
    /// {seq}, {ts} and {maestro} (the timing data, inside a string; added to an object
    /// that lacks it).
    #[arg(
        long,
        env = "MAESTRO_PAYLOAD_TEMPLATE",
        requires = "clients",
        conflicts_with = "size"
    )]
    pub payload_template: Option<PathBuf>,
    /// Each fleet client disconnects and reconnects this often (churn).
    #[arg(long, env = "MAESTRO_CHURN", value_parser = humantime::parse_duration, requires = "clients")]
    pub churn: Option<Duration>,
    /// Where results folders go.
    #[arg(long, env = "MAESTRO_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// How long to wait for workers at each step.
    #[arg(short, long, env = "MAESTRO_STEP_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print progress lines instead of the live view (which is shown when stdout is a
    /// terminal and the output is a table).
    #[arg(long, env = "MAESTRO_NO_TUI")]
    pub no_tui: bool,
}

/// A SUT URL, boxed (it is large, and rarely given).
pub(crate) fn boxed_sut(s: &str) -> Result<Box<SutUrl>, maestro_protocol::SutUrlError> {
    s.parse().map(Box::new)
}

impl StartArgs {
    /// The spec these flags ask for; a payload template file that cannot be read is a
    /// usage error (the rest is checked by [`TestSpec::validate`]).
    pub fn spec(&self) -> Result<TestSpec, RunError> {
        let duration = match (self.duration, self.count) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        let sut = SutUrl::nodes(&self.sut)?;
        let sut = self.sut_password.apply(sut).map_err(RunError::option)?;
        // A sine or steps arrival fixes its mean over the run; an explicit rate must agree
        // (the spec's validation says so when it does not).
        let implied = duration.and_then(|d| self.arrival.mean_rate(d));
        let rate = self.rate.or(implied).unwrap_or(1000.0);
        let mut spec = TestSpec {
            sut,
            rate,
            duration_ms: duration.map(|d| d.as_millis() as u64),
            count: self.count,
            warmup_ms: self.warmup.as_millis() as u64,
            size: self.size,
            producers: self.producers,
            consumers: self.consumers,
            topics: self.topics,
            payload: None,
            connect_rate: self.connect_rate,
            fleet: None,
            marks_ms: Vec::new(),
            consumer_backlog_bytes: self
                .consumer_backlog_size_gb
                .map(backlog_bytes)
                .transpose()
                .map_err(RunError::option)?,
            consumer_sut: self
                .consumer_sut
                .clone()
                .map(|c| self.sut_password.apply(*c))
                .transpose()
                .map_err(RunError::option)?
                .map(Box::new),
            subscriptions: self.subscriptions,
            arrival: self.arrival.clone(),
        };
        if let Some(clients) = self.clients {
            let payload = match &self.payload_template {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    RunError::option(format!(
                        "cannot read payload template {}: {e}",
                        path.display()
                    ))
                })?),
                None => None,
            };
            let fleet = maestro_controller::fleet::Fleet {
                clients,
                interval: self.interval,
                jitter: self.jitter,
                client_id: self.client_id.clone(),
                topic: self.topic.clone(),
                subscribe: self.subscribe.clone(),
                payload,
                churn: self.churn,
            };
            fleet.apply(&mut spec)?;
        }
        Ok(spec)
    }
}

/// OpenMessaging Benchmark's `consumerBacklogSizeGB` (GiB) in bytes.
pub fn backlog_bytes(gib: f64) -> Result<u64, String> {
    let bytes = gib * 1024.0 * 1024.0 * 1024.0;
    if gib.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64 {
        Ok(bytes as u64)
    } else {
        Err(format!(
            "consumer backlog of {gib} GiB must be a size above 0"
        ))
    }
}

/// A byte rate for people: B, KiB, MiB or GiB.
fn bytes(v: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The summary for people.
/// Percentiles on one line, in the unit that reads best.
fn percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p95 {}  p99 {}  p99.9 {}  max {}",
        micros(p.p50 as i64),
        micros(p.p90 as i64),
        p.p95.map_or("-".into(), |v| micros(v as i64)),
        micros(p.p99 as i64),
        micros(p.p999 as i64),
        micros(p.max as i64)
    )
}

/// The own-connection clients' lines (fleets): connect times, counts, failures, ramp.
fn connection_lines(c: &maestro_report::ConnectionSummary, lines: &mut Vec<String>) {
    let p = percentiles;
    if let Some(h) = &c.tcp_connect_us {
        lines.push(format!("TCP connect    {}", p(h)));
    }
    let failures = if c.failures.is_empty() {
        "none".to_owned()
    } else {
        c.failures
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ramp = c.ramp().map_or(String::new(), |(rate, span)| {
        format!(
            "  ramp {rate:.0}/s (full seconds; {span} s touched, peak {}/s)",
            c.peak_per_s
        )
    });
    lines.push(format!(
        "connections    opened {}  reconnects {}  dropped {}  churned {}  failed: {failures}{ramp}",
        c.opened, c.reconnects, c.dropped, c.churned
    ));
    if c.received_by_clients > 0 {
        lines.push(format!(
            "clients' own subscriptions received {}",
            c.received_by_clients
        ));
    }
    if !c.reason_codes.is_empty() {
        let codes: Vec<String> = c
            .reason_codes
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        lines.push(format!("MQTT 5 reason codes: {}", codes.join(", ")));
    }
}

/// One line per fault: its windows before, during and after, and the recovery.
fn fault_lines(faults: &[maestro_report::FaultSummary], lines: &mut Vec<String>) {
    for f in faults {
        let w = |x: &maestro_report::WindowStats| {
            format!(
                "p99 {} lost {}",
                micros(x.response_time_us.p99 as i64),
                x.lost
            )
        };
        let lasted = f
            .confirmed_at_us
            .zip(f.healed_at_us)
            .map_or("-".to_owned(), |(c, h)| micros(h - c));
        let recovered = f
            .recovered_after_ms
            .map_or("not within the run".to_owned(), |r| micros(r as i64 * 1000));
        lines.push(format!(
            "fault {} at {} (lasted {lasted}): before {}  during {}  after {}  recovered after {recovered}{}",
            f.action,
            micros(f.at_ms as i64 * 1000),
            w(&f.before),
            w(&f.during),
            w(&f.after),
            if f.errors.is_empty() {
                String::new()
            } else {
                format!("  ERRORS: {}", f.errors.join("; "))
            }
        ));
    }
}

/// One line per inspector source that read the SUT, then the cross-check's warnings.
fn sut_lines(m: &maestro_report::SutSummary, lines: &mut Vec<String>) {
    use maestro_protocol::metric_names as names;
    for src in &m.sources {
        let max = |name: &str| {
            src.metrics
                .iter()
                .filter(|x| x.name == name)
                .map(|x| x.max)
                .reduce(f64::max)
        };
        let increase = |name: &str| {
            src.metrics
                .iter()
                .find(|x| x.name == name && x.label.is_none())
                .and_then(|x| x.increase)
        };
        let mut parts = Vec::new();
        if let Some(v) = increase(names::MESSAGES_RECEIVED) {
            parts.push(format!("received {v:.0}"));
        }
        if let Some(v) = increase(names::MESSAGES_SENT) {
            parts.push(format!("sent {v:.0}"));
        }
        if let Some(v) = max(names::QUEUE_DEPTH) {
            parts.push(format!("max queue depth {v:.0}"));
        }
        if let Some(v) = max(names::CONSUMER_LAG) {
            parts.push(format!("max lag {v:.0}"));
        }
        if let Some(v) = max(names::MEMORY_BYTES) {
            parts.push(format!("max memory {:.1} MiB", v / 1048576.0));
        }
        if let Some(v) = max("cpu_percent") {
            parts.push(format!("max CPU {v:.0} %"));
        }
        lines.push(format!(
            "sut {}/{}  {}  ({} samples)",
            src.inspector,
            src.source,
            parts.join("  "),
            src.samples
        ));
    }
    for w in &m.warnings {
        lines.push(format!("WARNING: {w}"));
    }
}

pub fn summary_table(s: &RunSummary, folder: &std::path::Path) -> String {
    let p = percentiles;
    let mut lines = vec![
        format!("run {}  sut {}", s.run_id, s.sut),
        format!(
            "sent {}  unsent {}  received {}  lost {}  duplicated {}  out of order {}  errors {}",
            s.sent, s.unsent, s.received, s.lost, s.duplicated, s.out_of_order, s.errors
        ),
        format!(
            "rate offered {}{}  achieved {:.1}/s  received {:.1}/s  (measured over {:.1} s)",
            if s.offered_rate > 0.0 {
                format!("{:.1}/s", s.offered_rate)
            } else {
                "max".into()
            },
            s.arrival
                .as_ref()
                .map_or(String::new(), |a| format!(" (mean, {a})")),
            s.achieved_rate,
            s.receive_rate,
            s.measured_s
        ),
    ];
    if let (Some(sent), Some(received)) = (s.achieved_bytes_rate, s.receive_bytes_rate) {
        lines.push(format!(
            "bytes sent {}/s  received {}/s",
            bytes(sent),
            bytes(received)
        ));
    }
    lines.push(format!("response time  {}", p(&s.response_time_us)));
    lines.push(format!("service time   {}", p(&s.service_time_us)));
    lines.push(format!("send lag       {}", p(&s.send_lag_us)));
    if let Some(h) = &s.publish_latency_us {
        lines.push(format!("publish (ack)  {}", p(h)));
    }
    if let Some(g) = &s.generator {
        lines.push(format!("generator      {}", g.line()));
    }
    if let Some(b) = &s.backlog {
        let seconds = |v: Option<f64>| v.map_or("never".into(), |v| format!("{v:.0} s"));
        lines.push(format!(
            "backlog        target {}  built after {} ({} messages)  caught up {} later  drained at {}/s ({}/s)",
            bytes(b.target_bytes as f64),
            seconds(b.built_s),
            b.backlog_messages.map_or("-".into(), |m| m.to_string()),
            seconds(b.catch_up_s),
            b.drain_rate.map_or("-".into(), |r| format!("{r:.0}")),
            b.drain_bytes_rate.map_or("-".into(), bytes),
        ));
    }
    if let Some(h) = &s.connect_us {
        lines.push(format!(
            "connect        {}  ({} connections)",
            p(h),
            h.count
        ));
    }
    if let Some(h) = &s.tls_handshake_us {
        lines.push(format!("TLS handshake  {}", p(h)));
    }
    if let Some(h) = &s.subscribe_us {
        lines.push(format!(
            "subscribe      {}  ({} subscriptions)",
            p(h),
            h.count
        ));
    }
    if let Some(c) = &s.connections {
        connection_lines(c, &mut lines);
    }
    if let Some(shortfall) = s.shortfall() {
        lines.push(format!("BELOW OFFER: {shortfall}"));
    }
    fault_lines(&s.faults, &mut lines);
    if let Some(m) = &s.sut_metrics {
        sut_lines(m, &mut lines);
    }
    if s.clock.max_offset_us > 0 {
        lines.push(format!(
            "clocks: latencies corrected by up to {} (error bound ± {})",
            micros(s.clock.max_offset_us),
            micros(s.clock.error_bound_us)
        ));
    }
    if s.degraded {
        lines.push(format!("DEGRADED: {}", s.degraded_reasons.join("; ")));
    }
    if s.interrupted {
        lines.push("INTERRUPTED: the run was stopped early".into());
    }
    for e in &s.error_messages {
        lines.push(format!("error x{}: {}", e.count, e.message));
    }
    lines.push(format!("results in {}", folder.display()));
    lines.join("\n")
}
