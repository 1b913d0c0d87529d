//! TLS benchmarks against private Mosquittos started here with lab certificates made in
//! process: one with a TLS listener, one that also requires client certificates. Figures
//! are ratios against baselines measured in the same run:
//!
//! 1. Connections per second (connect, CONNACK, disconnect, one after another, one
//!    thread): maestro's MQTT driver vs a minimal rumqttc loop with one rustls config
//!    built once and, like maestro, no session resumption (every connection a full
//!    handshake; the loop with rustls's default resumption is shown beside it). Plain
//!    TCP, TLS, and mutual TLS (maestro makes a certificate per client there; the minimal
//!    loop shows one shared certificate, and the cost of making one is printed). Also the
//!    handshake times maestro recorded.
//! 2. CPU per QoS 0 message, publishing as fast as the connection goes: maestro's
//!    producer with and without TLS, beside the minimal rumqttc publisher with and
//!    without TLS (target: maestro/minimal >= 0.85x with TLS as without).
//!
//! ```text
//! cargo bench -p maestro-worker --bench tls [-- connect|publish]
//! ```

#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed

mod common;
use common::*;

use maestro_protocol::{ProducerPlan, RunId};
use maestro_testkit::Mosquitto;
use maestro_worker::driver::mqtt::MqttDriver;
use maestro_worker::driver::{Driver, Producer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rumqttc::{Event, Outgoing, Packet};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections per measurement.
const CONNECTIONS: u32 = 300;

/// A lab CA, a server certificate for localhost and 127.0.0.1 (also usable by clients),
/// in a folder removed on drop.
struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("maestro-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "bench CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        let write = |name: &str, text: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            // Mosquitto started as root reads its files as its own user.
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        };
        write("ca.pem", &ca_cert.pem());
        write("ca.key", &ca_key_pem);
        write("server.pem", &server_cert.pem());
        write("server.key", &server_key.serialize_pem());
        Lab { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn mosquitto(&self, mutual: bool) -> Mosquitto {
        let mut conf = format!(
            "cafile {}\ncertfile {}\nkeyfile {}",
            self.file("ca.pem"),
            self.file("server.pem"),
            self.file("server.key")
        );
        if mutual {
            conf.push_str("\nrequire_certificate true");
        }
        Mosquitto::start_with(&conf).unwrap()
    }

    /// The minimal client's rustls config, built once: trusts the lab CA, presents the
    /// server's certificate as its client certificate when `mutual`; resumes sessions
    /// (rustls's default) only when `resume`.
    fn client_config(&self, mutual: bool, resume: bool) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.file("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = if mutual {
            let chain = CertificateDer::pem_file_iter(self.file("server.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(self.file("server.key")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Arc::new(config)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The minimal connect loop: `CONNECTIONS` sessions one after another.
async fn minimal_connects(port: u16, tls: Option<Arc<rustls::ClientConfig>>) -> u32 {
    for i in 0..CONNECTIONS {
        let (client, mut eventloop) = client(port, tls.clone(), &format!("bench-conn-{i}"));
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("minimal connect {i}: {e}"),
            }
        }
        client.try_disconnect().unwrap();
        while !matches!(
            eventloop.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    }
    CONNECTIONS
}

/// Maestro's connect loop: the driver opens and closes `CONNECTIONS` producers.
async fn maestro_connects(driver: MqttDriver) -> u32 {
    for i in 0..CONNECTIONS {
        let plan = ProducerPlan {
            id: i,
            topic: 0,
            rate: 0.0,
            count: None,
        };
        let p = driver.producer(&plan).await.unwrap();
        p.close().await;
    }
    CONNECTIONS
}

/// Connections per second and CPU per connection of one loop on its own thread.
fn rate<F: std::future::Future<Output = u32> + 'static>(
    make: impl FnOnce() -> F + Send + 'static,
) -> (f64, f64) {
    let began = Instant::now();
    let (n, cpu) = on_thread(make).join().unwrap();
    let wall = began.elapsed().as_secs_f64();
    (n as f64 / wall, cpu.as_secs_f64() * 1e6 / n as f64)
}

fn bench_connect(lab: &Lab) {
    let plain = Mosquitto::start().unwrap();
    let tls = lab.mosquitto(false);
    let mutual = lab.mosquitto(true);
    let ca = lab.file("ca.pem");
    let cases: Vec<(&str, u16, Option<Arc<rustls::ClientConfig>>, String)> = vec![
        ("plain TCP", plain.port, None, plain.url("bench", "")),
        (
            "TLS",
            tls.port,
            Some(lab.client_config(false, false)),
            format!("mqtts://localhost:{}/bench?ca={ca}", tls.port),
        ),
        (
            "mutual TLS",
            mutual.port,
            Some(lab.client_config(true, false)),
            format!(
                "mqtts://localhost:{}/bench?ca={ca}&client_ca={ca}&client_ca_key={}",
                mutual.port,
                lab.file("ca.key")
            ),
        ),
    ];
    for (label, port, config, sut) in cases {
        for round in 0..3 {
            let c = config.clone();
            let (min_rate, min_cpu) = rate(move || minimal_connects(port, c));
            let driver =
                MqttDriver::from_url(&sut, &RunId::new(format!("c{round}")).unwrap()).unwrap();
            let d = driver.clone();
            let (our_rate, our_cpu) = rate(move || maestro_connects(d));
            let handshakes = driver
                .timings()
                .tls_handshake
                .map(|h| {
                    format!(
                        " | maestro's TLS handshakes p50 {} µs p99 {} µs ({})",
                        h.value_at_quantile(0.5),
                        h.value_at_quantile(0.99),
                        h.len()
                    )
                })
                .unwrap_or_default();
            println!(
                "connect {label} round {round}: minimal {min_rate:.0} conn/s ({min_cpu:.0} µs CPU/conn) | maestro {our_rate:.0} conn/s ({our_cpu:.0} µs CPU/conn) | ratio {:.2}x{handshakes}",
                our_rate / min_rate
            );
        }
    }
    // What rustls's session resumption would save (maestro never resumes).
    let resuming = lab.client_config(false, true);
    let port = tls.port;
    let (r, cpu) = rate(move || minimal_connects(port, Some(resuming)));
    println!("connect TLS, minimal loop resuming sessions: {r:.0} conn/s ({cpu:.0} µs CPU/conn)");
    // What a certificate of its own costs a client (mutual TLS with client_ca=).
    let opts = maestro_protocol::TlsOptions {
        client_ca: Some(ca.clone()),
        client_ca_key: Some(lab.file("ca.key")),
        ..Default::default()
    };
    let issuer = maestro_worker::driver::tls::ClientCa::from_options(&opts)
        .unwrap()
        .unwrap();
    let began = Instant::now();
    for i in 0..CONNECTIONS {
        issuer.issue(&format!("device-{i}")).unwrap();
    }
    println!(
        "a client certificate (ECDSA P-256 key and signature): {:.0} µs each",
        began.elapsed().as_secs_f64() * 1e6 / f64::from(CONNECTIONS)
    );
}

fn bench_publish(lab: &Lab) {
    let d = Duration::from_secs(5);
    let plain = Mosquitto::start().unwrap();
    let tls = lab.mosquitto(false);
    let ca = lab.file("ca.pem");
    let cases: Vec<(&str, u16, Option<Arc<rustls::ClientConfig>>, String)> = vec![
        (
            "publish QoS0 plain",
            plain.port,
            None,
            plain.url("bench", ""),
        ),
        (
            "publish QoS0 TLS",
            tls.port,
            Some(lab.client_config(false, false)),
            format!("mqtts://localhost:{}/bench?ca={ca}", tls.port),
        ),
    ];
    for (label, port, config, sut) in cases {
        ratio_rounds(label, 0.85, |round| {
            let c = config.clone();
            let (sent_min, cpu_min) =
                on_thread(move || minimal_publisher(port, c, "bench/minimal".into(), d))
                    .join()
                    .unwrap();
            let run = RunId::new(format!("p{round}")).unwrap();
            let (sent_m, cpu_m, _) =
                run_producer(MqttDriver::from_url(&sut, &run).unwrap(), &sut, 0.0, d);
            println!(
                "{label} round {round}: CPU per message minimal {:.2} µs, maestro {:.2} µs",
                cpu_min.as_secs_f64() * 1e6 / sent_min as f64,
                cpu_m.as_secs_f64() * 1e6 / sent_m as f64
            );
            (sent_min, cpu_min.as_secs_f64(), sent_m, cpu_m.as_secs_f64())
        });
    }
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let lab = Lab::new();
    if wants("connect") {
        bench_connect(&lab);
    }
    if wants("publish") {
        bench_publish(&lab);
    }
}
