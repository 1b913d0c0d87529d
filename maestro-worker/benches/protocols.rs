//! Benchmarks of the AMQP 0-9-1, Kafka and AMQP 1.0 drivers, against a private RabbitMQ
//! (with its AMQP 1.0 plugin) and a private tansu started by the project's scripts.
//! Figures are ratios against baselines measured in the same run:
//!
//! 1. AMQP publish without confirms: maestro's producer vs a minimal lapin publish loop,
//!    in messages per CPU-second of the process (target >= 0.9x).
//! 2. Kafka produce: maestro's producer vs a minimal rdkafka produce loop, messages per
//!    CPU-second of the process, librdkafka's threads included (target >= 0.9x).
//! 3. AMQP 1.0 send, at least once (unsettled, up to 1,000 transfers awaiting their
//!    disposition): maestro's producer vs a minimal fe2o3-amqp send loop with the same
//!    window, in messages per CPU-second of the process (target >= 0.9x).
//! 4. RabbitMQ stream publish (every publish confirmed, up to 1,000 in flight, frames of
//!    up to 100): maestro's producer vs a minimal rabbitmq-stream-client loop with the
//!    same window and frames, in messages per CPU-second of the process (target >= 0.9x).
//! 5. Redis Streams XADD (pipelines of up to 1,000): maestro's producer vs a minimal redis
//!    crate loop of the same pipelines, in messages per CPU-second of the process (target
//!    >= 0.9x).
//! 6. NATS: JetStream publish (up to 1,000 awaiting their acknowledgement) and core
//!    publish (a flush after every 1,000): maestro's producer vs a minimal async-nats
//!    loop doing the same, in messages per CPU-second of the process (target >= 0.9x).
//! 7. STOMP SEND with receipts (up to 1,000 awaited) to RabbitMQ's STOMP plugin: maestro's
//!    producer vs a minimal loop of the same frame codec over a plain socket, in messages
//!    per CPU-second of the process (target >= 0.9x).
//! 8. Reliable end to end (confirms and manual acks; acks=all; AMQP 1.0 at least once;
//!    stream confirms; Redis Streams; NATS JetStream; STOMP receipts and
//!    client-individual acks): the maximum sustained rate of one producer and one
//!    consumer, then the response-time p99 at 50 % and 90 % of that rate.
//!
//! ```text
//! cargo bench -p maestro-worker --bench protocols [-- amqp|kafka|amqp10|stream|redis|nats|stomp] [e2e]
//! ```

#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed

mod common;
use common::*;

use maestro_protocol::RunId;
use maestro_testkit::ScriptedSut;
use maestro_worker::driver::Driver;
use maestro_worker::driver::amqp::AmqpDriver;
use maestro_worker::driver::amqp10::Amqp10Driver;
use maestro_worker::driver::kafka::KafkaDriver;
use maestro_worker::driver::nats::NatsDriver;
use maestro_worker::driver::redis::RedisDriver;
use maestro_worker::driver::stomp::{StompDriver, frame as stomp_frame};
use maestro_worker::driver::stream::StreamDriver;
use std::time::{Duration, Instant};

const D: Duration = Duration::from_secs(5);

/// Process CPU seconds taken by `f`, with its result.
fn cpu<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let before = process_cpu_ns();
    let out = f();
    (out, (process_cpu_ns() - before) as f64 / 1e9)
}

async fn minimal_lapin(url: String, queue: String) -> u64 {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::{BasicProperties, Connection, ConnectionProperties, types::FieldTable};
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let payload = vec![b'x'; SIZE];
    let end = Instant::now() + D;
    let mut sent = 0u64;
    while Instant::now() < end {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default(),
            )
            .await
            .unwrap();
        sent += 1;
    }
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    sent
}

fn minimal_rdkafka(bootstrap: &str, topic: &str) -> u64 {
    use rdkafka::ClientConfig;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "100000")
        .create()
        .unwrap();
    let payload = vec![b'x'; SIZE];
    let end = Instant::now() + D;
    let mut sent = 0u64;
    while Instant::now() < end {
        match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(&payload[..])) {
            Ok(()) => {
                sent += 1;
                if sent.is_multiple_of(1024) {
                    producer.poll(Duration::ZERO);
                }
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => panic!("{e}"),
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    sent
}

/// Transfers awaiting their disposition, in both AMQP 1.0 senders (the driver's `window`).
const WINDOW: usize = 1000;

/// A minimal fe2o3-amqp sender: unsettled transfers, at most [`WINDOW`] awaiting their
/// disposition; returns how many were sent (all accepted).
async fn minimal_fe2o3(url: String, address: String) -> u64 {
    use fe2o3_amqp::types::messaging::{Message, Outcome};
    use fe2o3_amqp::types::primitives::Binary;
    use fe2o3_amqp::{Connection, Sender, Session};
    // fe2o3-amqp's own scheme for what maestro calls amqp10://. TCP_NODELAY as maestro
    // sets it (Nagle must never hold a measured message back): fe2o3's `open` leaves it off.
    let url = url::Url::parse(&url.replacen("amqp10://", "amqp://", 1)).unwrap();
    let tcp = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut conn = Connection::builder()
        .container_id(format!("{address}-conn"))
        .hostname(url.host_str().unwrap())
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain {
            username: url.username().to_owned(),
            password: url.password().unwrap().to_owned(),
        })
        .open_with_stream(tcp)
        .await
        .unwrap();
    let mut session = Session::begin(&mut conn).await.unwrap();
    let mut sender = Sender::attach(&mut session, format!("{address}-link"), address.as_str())
        .await
        .unwrap();
    let payload = vec![b'x'; SIZE];
    let mut in_flight = std::collections::VecDeque::with_capacity(WINDOW);
    let accepted = |o: Outcome| assert!(matches!(o, Outcome::Accepted(_)), "{o:?}");
    let end = Instant::now() + D;
    let mut sent = 0u64;
    while Instant::now() < end {
        let message = Message::builder()
            .data(Binary::from(payload.clone()))
            .build();
        in_flight.push_back(sender.send_batchable(message).await.unwrap());
        sent += 1;
        if in_flight.len() >= WINDOW {
            accepted(in_flight.pop_front().unwrap().await.unwrap());
        }
    }
    for fut in in_flight {
        accepted(fut.await.unwrap());
    }
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = conn.close().await;
    sent
}

/// A minimal rabbitmq-stream-client publisher: frames of 100 messages handed to the
/// client, at most [`WINDOW`] awaiting their confirm; returns how many were confirmed.
async fn minimal_stream(url: String, stream: String) -> u64 {
    use rabbitmq_stream_client::Environment;
    use rabbitmq_stream_client::types::Message;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let url = url::Url::parse(&url).unwrap();
    let env = Environment::builder()
        .host(url.host_str().unwrap())
        .port(url.port().unwrap())
        .username(url.username())
        .password(url.password().unwrap())
        .build()
        .await
        .unwrap();
    let _ = env.stream_creator().create(&stream).await;
    let producer = env.producer().batch_size(100).build(&stream).await.unwrap();
    let confirmed = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let payload = vec![b'x'; SIZE];
    let end = Instant::now() + D;
    let mut sent = 0u64;
    while Instant::now() < end {
        while sent - confirmed.load(Ordering::Acquire) + 100 > WINDOW as u64 {
            notify.notified().await;
        }
        let frame = (0..100)
            .map(|_| Message::builder().body(payload.clone()).build())
            .collect();
        let (c, n) = (confirmed.clone(), notify.clone());
        producer
            .batch_send(frame, move |r| {
                assert!(r.is_ok_and(|s| s.confirmed()));
                c.fetch_add(1, Ordering::Release);
                n.notify_one();
                std::future::ready(())
            })
            .await
            .unwrap();
        sent += 100;
    }
    while confirmed.load(Ordering::Acquire) < sent {
        notify.notified().await;
    }
    let _ = producer.close().await;
    let _ = env.delete_stream(&stream).await;
    sent
}

/// A minimal redis crate producer: pipelines of [`WINDOW`] XADDs, one after the other;
/// returns how many were added.
async fn minimal_redis(url: String, key: String) -> u64 {
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let payload = vec![b'x'; SIZE];
    let end = Instant::now() + D;
    let mut sent = 0u64;
    while Instant::now() < end {
        let mut pipe = redis::pipe();
        for _ in 0..WINDOW {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("d")
                .arg(&payload[..]);
        }
        let ids: Vec<String> = pipe.query_async(&mut conn).await.unwrap();
        sent += ids.len() as u64;
    }
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    sent
}

/// A minimal async-nats producer: JetStream publishes with up to [`WINDOW`] awaiting
/// their acknowledgement (`jetstream`), or core publishes with a flush after every
/// [`WINDOW`]; returns how many were acknowledged (flushed).
async fn minimal_nats(url: String, name: String, jetstream: bool) -> u64 {
    use futures_util::StreamExt;
    let client = async_nats::connect(url.trim_start_matches("nats://"))
        .await
        .unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let end = Instant::now() + D;
    let mut sent = 0u64;
    if !jetstream {
        while Instant::now() < end {
            for _ in 0..WINDOW {
                client.publish(name.clone(), payload.clone()).await.unwrap();
            }
            client.flush().await.unwrap();
            sent += WINDOW as u64;
        }
        return sent;
    }
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![name.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut pending = futures_util::stream::FuturesOrdered::new();
    while Instant::now() < end {
        while pending.len() < WINDOW {
            let ack = js.publish(name.clone(), payload.clone()).await.unwrap();
            pending.push_back(ack.into_future());
        }
        pending.next().await.unwrap().unwrap();
        sent += 1;
    }
    while let Some(ack) = pending.next().await {
        ack.unwrap();
        sent += 1;
    }
    js.delete_stream(&name).await.unwrap();
    sent
}

/// A minimal STOMP producer on maestro's frame codec: SENDs with receipts, up to
/// [`WINDOW`] awaited, over one socket; returns how many were receipted.
async fn minimal_stomp(addr: String, destination: String) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut read, mut write) = (bytes::BytesMut::new(), bytes::BytesMut::new());
    stomp_frame::connect(&mut write, "/", Some(("guest", "guest")));
    tcp.write_all_buf(&mut write).await.unwrap();
    loop {
        if let Some(f) = stomp_frame::decode(&mut read).unwrap() {
            assert_eq!(f.command, stomp_frame::Command::Connected, "{f:?}");
            break;
        }
        assert!(tcp.read_buf(&mut read).await.unwrap() > 0);
    }
    let destination = stomp_frame::escape(&destination);
    let payload = vec![b'x'; SIZE];
    let end = Instant::now() + D;
    let (mut next_receipt, mut receipted) = (0u64, 0u64);
    while Instant::now() < end || receipted < next_receipt {
        while Instant::now() < end && next_receipt - receipted < WINDOW as u64 {
            next_receipt += 1;
            stomp_frame::send(&mut write, &destination, b"", Some(next_receipt), &payload);
        }
        tcp.write_all_buf(&mut write).await.unwrap();
        assert!(tcp.read_buf(&mut read).await.unwrap() > 0);
        while let Some(f) = stomp_frame::decode(&mut read).unwrap() {
            if let Some(id) = f
                .receipt_id
                .as_deref()
                .and_then(stomp_frame::receipt_number)
            {
                receipted = receipted.max(id);
            }
        }
    }
    receipted
}

fn reliable_e2e<D: Driver>(label: &str, sut: &str, make: impl Fn(&RunId) -> D) {
    let run = |name: &str, rate: f64| {
        // Run ids are one word: "AMQP 1.0-max" becomes "AMQP10-max".
        let id = RunId::new(name.replace([' ', '.'], "")).unwrap();
        run_pair(make(&id), sut, rate, D)
    };
    let line = |what: String, o: &Outcome| {
        let r = &o.recorder;
        println!(
            "{label} reliable {what}: sent {}, received {} ({} distinct), lost {}, duplicated {}, errors {:?}; response p50 {} us p99 {} us max {} us; service p99 {} us; send lag p99 {} us; response p99 by second (ms) {:?}, from second 2 on {:.1} ms",
            o.sent,
            r.counters.received,
            o.unique,
            o.lost(),
            r.counters.duplicated,
            o.errors,
            r.response.value_at_quantile(0.5),
            r.response.value_at_quantile(0.99),
            r.response.max(),
            r.service.value_at_quantile(0.99),
            r.lag.value_at_quantile(0.99),
            o.p99_by_second_ms(),
            o.p99_from_second_ms(2),
        );
    };
    let full = run(&format!("{label}-max"), 0.0);
    let max = full.recorder.counters.received as f64 / D.as_secs_f64();
    line(
        format!(
            "at full speed (maximum sustained end-to-end {max:.0} msg/s, 1 producer, 1 consumer)"
        ),
        &full,
    );
    for (pct, frac) in [(50, 0.5), (90, 0.9)] {
        let o = run(&format!("{label}-{pct}"), max * frac);
        line(format!("at {pct} % ({:.0} msg/s)", max * frac), &o);
    }
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| {
        which.is_empty() || which.iter().all(|w| w == "e2e") || which.iter().any(|w| w == name)
    };
    // `e2e`: only the end-to-end measurements.
    let ratios = !which.iter().any(|w| w == "e2e");
    if want("amqp") {
        let rabbit = ScriptedSut::rabbitmq().unwrap();
        let url = rabbit.url.clone();
        println!("RabbitMQ at {url}; {SIZE}-byte messages, {D:?} per measurement");
        if ratios {
            ratio_rounds("AMQP publish (no confirms)", 0.9, |r| {
                let (u, q) = (url.clone(), format!("bench-min-{r}"));
                let (n_min, cpu_min) =
                    cpu(|| on_thread(move || minimal_lapin(u, q)).join().unwrap().0);
                let id = RunId::new(format!("pub{r}")).unwrap();
                let driver = AmqpDriver::from_url(&url, &id).unwrap();
                let ((n_ours, _, _), cpu_ours) = cpu(|| run_producer(driver, &url, 0.0, D));
                (n_min, cpu_min, n_ours, cpu_ours)
            });
        }
        let sut = format!("{url}?confirms=true&ack=manual");
        reliable_e2e("AMQP", &sut, |id| AmqpDriver::from_url(&sut, id).unwrap());
    }
    if want("kafka") {
        let tansu = ScriptedSut::tansu().unwrap();
        let url = tansu.url.clone();
        let bootstrap = url.trim_start_matches("kafka://").to_owned();
        println!("tansu at {url}; {SIZE}-byte messages, {D:?} per measurement");
        if ratios {
            ratio_rounds("Kafka produce (acks=all)", 0.9, |r| {
                let topic = format!("bench-min-{r}");
                let (n_min, cpu_min) = cpu(|| minimal_rdkafka(&bootstrap, &topic));
                let id = RunId::new(format!("pub{r}")).unwrap();
                let sut = format!("{url}/bench?acks=all");
                let driver = KafkaDriver::from_url(&sut, &id, 1).unwrap();
                let ((n_ours, _, _), cpu_ours) = cpu(|| run_producer(driver, &sut, 0.0, D));
                (n_min, cpu_min, n_ours, cpu_ours)
            });
        }
        let sut = format!("{url}/e2e?acks=all");
        reliable_e2e("Kafka", &sut, |id| {
            KafkaDriver::from_url(&sut, id, 1).unwrap()
        });
    }
    if want("amqp10") {
        let rabbit = ScriptedSut::rabbitmq_multiprotocol().unwrap();
        let url = rabbit.amqp10_url.clone().unwrap();
        println!(
            "RabbitMQ's AMQP 1.0 plugin at {url}; {SIZE}-byte messages, {D:?} per measurement"
        );
        if ratios {
            ratio_rounds("AMQP 1.0 send (at least once)", 0.9, |r| {
                let (u, a) = (url.clone(), format!("/queue/bench-min-{r}"));
                let (n_min, cpu_min) =
                    cpu(|| on_thread(move || minimal_fe2o3(u, a)).join().unwrap().0);
                let id = RunId::new(format!("pub{r}")).unwrap();
                let sut = format!("{url}/queue/bench?window={WINDOW}");
                let driver = Amqp10Driver::from_url(&sut, &id).unwrap();
                let ((n_ours, _, _), cpu_ours) = cpu(|| run_producer(driver, &sut, 0.0, D));
                (n_min, cpu_min, n_ours, cpu_ours)
            });
        }
        let sut = format!("{url}/queue/e2e");
        reliable_e2e("AMQP 1.0", &sut, |id| {
            Amqp10Driver::from_url(&sut, id).unwrap()
        });
    }
    if want("stream") {
        let rabbit = ScriptedSut::rabbitmq_stream().unwrap();
        let url = rabbit.stream_url.clone().unwrap();
        println!("RabbitMQ's stream plugin at {url}; {SIZE}-byte messages, {D:?} per measurement");
        if ratios {
            ratio_rounds("RabbitMQ stream publish (confirmed)", 0.9, |r| {
                let (u, st) = (url.clone(), format!("bench-min-{r}"));
                let (n_min, cpu_min) =
                    cpu(|| on_thread(move || minimal_stream(u, st)).join().unwrap().0);
                let id = RunId::new(format!("pub{r}")).unwrap();
                let sut = format!("{url}/%2f?window={WINDOW}&batch_size=100");
                let driver = StreamDriver::from_url(&sut, &id).unwrap();
                let ((n_ours, _, _), cpu_ours) = cpu(|| run_producer(driver, &sut, 0.0, D));
                (n_min, cpu_min, n_ours, cpu_ours)
            });
        }
        let sut = format!("{url}/%2f");
        reliable_e2e("RabbitMQ stream", &sut, |id| {
            StreamDriver::from_url(&sut, id).unwrap()
        });
    }
    if want("redis") {
        let server = ScriptedSut::redis().unwrap();
        let url = server.url.clone();
        println!("Redis at {url}; {SIZE}-byte messages, {D:?} per measurement");
        if ratios {
            ratio_rounds("Redis Streams XADD (pipelined)", 0.9, |r| {
                let (u, k) = (url.clone(), format!("bench-min-{r}"));
                let (n_min, cpu_min) =
                    cpu(|| on_thread(move || minimal_redis(u, k)).join().unwrap().0);
                let id = RunId::new(format!("pub{r}")).unwrap();
                let sut = format!("{url}?mode=streams&window={WINDOW}");
                let driver = RedisDriver::from_url(&sut, &id).unwrap();
                let ((n_ours, _, _), cpu_ours) = cpu(|| run_producer(driver, &sut, 0.0, D));
                (n_min, cpu_min, n_ours, cpu_ours)
            });
        }
        let sut = format!("{url}?mode=streams");
        reliable_e2e("Redis Streams", &sut, |id| {
            RedisDriver::from_url(&sut, id).unwrap()
        });
    }
    if want("nats") {
        let server = ScriptedSut::nats().unwrap();
        let url = server.url.clone();
        println!("NATS at {url}; {SIZE}-byte messages, {D:?} per measurement");
        if ratios {
            for (label, jetstream, query) in [
                (
                    "NATS JetStream publish (acknowledged)",
                    true,
                    "jetstream=true&",
                ),
                ("NATS core publish (flushed)", false, ""),
            ] {
                ratio_rounds(label, 0.9, |r| {
                    let (u, n) = (url.clone(), format!("bench-min-{r}"));
                    let (n_min, cpu_min) = cpu(|| {
                        on_thread(move || minimal_nats(u, n, jetstream))
                            .join()
                            .unwrap()
                            .0
                    });
                    let id = RunId::new(format!("pub{r}")).unwrap();
                    let sut = format!("{url}?{query}window={WINDOW}");
                    let driver = NatsDriver::from_url(&sut, &id).unwrap();
                    let ((n_ours, _, _), cpu_ours) = cpu(|| run_producer(driver, &sut, 0.0, D));
                    (n_min, cpu_min, n_ours, cpu_ours)
                });
            }
        }
        let sut = format!("{url}?jetstream=true");
        reliable_e2e("NATS JetStream", &sut, |id| {
            NatsDriver::from_url(&sut, id).unwrap()
        });
    }
    if want("stomp") {
        let rabbit = ScriptedSut::rabbitmq_stomp().unwrap();
        let url = rabbit.stomp_url.clone().unwrap();
        let addr = url.rsplit('@').next().unwrap().to_owned();
        println!("RabbitMQ's STOMP plugin at {url}; {SIZE}-byte messages, {D:?} per measurement");
        if ratios {
            ratio_rounds("STOMP SEND (receipted)", 0.9, |r| {
                let (a, d) = (addr.clone(), format!("/topic/bench-min-{r}"));
                let (n_min, cpu_min) =
                    cpu(|| on_thread(move || minimal_stomp(a, d)).join().unwrap().0);
                let id = RunId::new(format!("pub{r}")).unwrap();
                let sut = format!("{url}?dest=topic&window={WINDOW}");
                let driver = StompDriver::from_url(&sut, &id).unwrap();
                let ((n_ours, _, _), cpu_ours) = cpu(|| run_producer(driver, &sut, 0.0, D));
                (n_min, cpu_min, n_ours, cpu_ours)
            });
        }
        let sut = format!("{url}?prefetch=1000");
        reliable_e2e("STOMP", &sut, |id| StompDriver::from_url(&sut, id).unwrap());
    }
}
