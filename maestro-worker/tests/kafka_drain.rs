//! A Kafka consumer's drain reads its partitions again from the offsets it expects before
//! it ends. Against a private tansu: a consumer that has taken only part of a partition
//! is not caught up (it reads the rest again, each record once), and once a re-read
//! brings nothing new it is (a drain never waits out its limit on a finished partition). (A CI run lost the last 3 of 8,000 records: a fetch had skipped a
//! partition's last records, and no later record showed the hole.)

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::{ConsumerPlan, PayloadHeader, ProducerPlan, RunId};
use maestro_testkit::ScriptedSut;
use maestro_worker::driver::kafka::KafkaDriver;
use maestro_worker::driver::{Consumer, Driver, Producer};
use std::collections::BTreeSet;
use std::time::Duration;

const N: u64 = 50;
const TAKEN: u64 = 30;

#[test]
fn a_consumer_behind_its_partition_reads_the_rest_once_then_is_caught_up() {
    let tansu = ScriptedSut::tansu().unwrap();
    let sut = format!("{}/drain?partitions=1&acks=all&linger=0", tansu.url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let run = RunId::new(format!("drain{}", std::process::id())).unwrap();
        let driver = KafkaDriver::from_url(&sut, &run, 1).unwrap();
        let mut consumer = driver
            .consumer(&ConsumerPlan {
                id: 0,
                topic: 0,
                subscription: 0,
            })
            .await
            .unwrap();
        let mut producer = driver
            .producer(&ProducerPlan {
                id: 0,
                topic: 0,
                rate: 0.0,
                count: Some(N),
            })
            .await
            .unwrap();
        for sequence in 0..N {
            let mut body = vec![0u8; 64];
            PayloadHeader {
                producer: 0,
                sequence,
                intended_ns: 1,
                actual_ns: 1,
            }
            .write(&mut body);
            producer.try_send(bytes::Bytes::from(body)).unwrap();
        }
        let flushed = tokio::time::timeout(Duration::from_secs(30), async {
            while !producer.idle() {
                producer.drive().await.unwrap();
            }
        });
        flushed
            .await
            .expect("the producer did not flush within 30 s");

        let mut seen = BTreeSet::new();
        recv(&mut consumer, &mut seen, TAKEN).await;
        // The rest waits in the client or the broker: behind the partition's end.
        let caught_up = tokio::time::timeout(Duration::from_secs(10), consumer.caught_up())
            .await
            .unwrap();
        assert!(!caught_up, "caught up after {} of {N}", seen.len());
        recv(&mut consumer, &mut seen, N).await;
        assert_eq!(seen, (0..N).collect::<BTreeSet<_>>());
        // Asked again until a re-read brings nothing new: no record arrives twice.
        let mut checks = 0;
        loop {
            checks += 1;
            let caught_up = tokio::time::timeout(Duration::from_secs(10), consumer.caught_up())
                .await
                .unwrap();
            let extra = tokio::time::timeout(Duration::from_millis(1000), async {
                loop {
                    if let Ok(Some(p)) = consumer.recv().await {
                        return PayloadHeader::read(&p).unwrap().sequence;
                    }
                }
            })
            .await;
            assert!(extra.is_err(), "record {:?} arrived again", extra.ok());
            if caught_up {
                break;
            }
            assert!(checks < 4, "never caught up after all {N}");
        }
        consumer.close().await;
        producer.close().await;
        driver.finish(true).await.unwrap();
    });
}

/// Receives until `seen` holds `until` sequences, each once, within 30 s.
async fn recv<C: Consumer>(consumer: &mut C, seen: &mut BTreeSet<u64>, until: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (seen.len() as u64) < until {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(Some(p))) => {
                let h = PayloadHeader::read(&p).unwrap();
                assert!(seen.insert(h.sequence), "{} twice", h.sequence);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => panic!("recv failed: {e}"),
            Err(_) => panic!("{} of {until} within 30 s", seen.len()),
        }
    }
}
