//! A device fleet as asked for, on the command line (`start --clients`) or in a plan's
//! `[fleet]` table, and how it makes a test spec.

use crate::run::RunError;
use maestro_protocol::{FleetSpec, MessageSize, Template, TemplateKind, TestSpec};
use std::time::Duration;

/// A fleet as asked for (on the command line or in a plan), before it is a spec.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub clients: u32,
    pub interval: Duration,
    pub jitter: Duration,
    pub client_id: String,
    pub topic: Option<String>,
    pub subscribe: Option<String>,
    /// The payload template's text.
    pub payload: Option<String>,
    pub churn: Option<Duration>,
}

impl Fleet {
    /// Makes `spec` this fleet: its producers are the clients, at one message per
    /// interval each, on one topic family.
    pub fn apply(&self, spec: &mut TestSpec) -> Result<(), RunError> {
        let built = self.build(&spec.sut)?;
        self.shape(spec, built);
        Ok(())
    }

    /// The fleet part of a spec for `sut`, its templates checked.
    pub fn build(&self, sut: &maestro_protocol::SutUrl) -> Result<FleetSpec, RunError> {
        let bad = RunError::from;
        if self.interval.is_zero() {
            return Err(RunError::option("interval must be above 0"));
        }
        if self.clients == 0 {
            return Err(RunError::option("clients must be at least 1, not 0"));
        }
        let base = sut.base_topic().unwrap_or("maestro");
        let topic = self
            .topic
            .clone()
            .unwrap_or_else(|| format!("{base}/{{run}}/fleet/{{i}}"));
        Ok(FleetSpec {
            client_id: Template::parse(TemplateKind::ClientId, &self.client_id).map_err(bad)?,
            topic: Template::parse(TemplateKind::Topic, &topic).map_err(bad)?,
            subscribe: self
                .subscribe
                .as_deref()
                .map(|s| Template::parse(TemplateKind::Subscribe, s))
                .transpose()
                .map_err(bad)?,
            payload: self
                .payload
                .as_deref()
                .map(|p| Template::parse(TemplateKind::Payload, &FleetSpec::with_header(p)))
                .transpose()
                .map_err(bad)?,
            jitter_ms: self.jitter.as_millis() as u64,
            churn_ms: self.churn.map(|c| c.as_millis() as u64),
        })
    }

    /// The rate of the whole fleet: every client once per interval.
    pub fn rate(&self) -> f64 {
        f64::from(self.clients) / self.interval.as_secs_f64()
    }

    /// Gives `spec` the fleet's shape (producers, one topic family, rate) and `built`.
    pub fn shape(&self, spec: &mut TestSpec, built: FleetSpec) {
        spec.producers = self.clients;
        spec.topics = 1;
        spec.rate = self.rate();
        if built.payload.is_some() {
            // Messages are the rendered template: the size does not apply.
            spec.size = MessageSize::Fixed(maestro_protocol::HEADER_LEN as u32);
        }
        spec.fleet = Some(built);
    }
}
