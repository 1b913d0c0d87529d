//! The engine cancels a consumer's `recv` (at a stop, on a timeout): a message the client
//! handed over must never be dropped by a cancelled `recv`. Against a private RabbitMQ with
//! manual acks after every delivery, each `recv` is polled once and dropped when it is not
//! ready at once, so almost every call is cancelled: every message must still arrive.
//! (Before the fix, `recv` took a delivery and then awaited its ack: a cancellation there
//! dropped it, and a reliable run once received 111,903 of 111,904.)

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use futures_util::FutureExt;
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId};
use maestro_testkit::ScriptedSut;
use maestro_worker::driver::amqp::AmqpDriver;
use maestro_worker::driver::{Consumer, Driver, Producer};
use std::time::Duration;

const N: u64 = 2_000;

#[test]
fn a_cancelled_amqp_recv_never_drops_a_delivery() {
    let rabbit = ScriptedSut::rabbitmq().unwrap();
    let sut = format!("{}?ack=manual&ack_batch=1&prefetch=50", rabbit.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (received, cancelled) = rt.block_on(async {
        let run = RunId::new("cancel-safe").unwrap();
        let driver = AmqpDriver::from_url(&sut, &run).unwrap();
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
        let body = bytes::Bytes::from(vec![b'x'; 64]);
        let mut queued = 0;
        while queued < N {
            while queued < N && producer.try_send(body.clone()).is_ok() {
                queued += 1;
            }
            while !producer.idle() {
                tokio::time::timeout(Duration::from_secs(10), producer.drive())
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        let (mut received, mut cancelled) = (0u64, 0u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while received < N && tokio::time::Instant::now() < deadline {
            // One poll; a pending recv is dropped (cancelled) and the runtime gets a turn.
            match consumer.recv().now_or_never() {
                Some(Ok(Some(_))) => received += 1,
                Some(Ok(None)) => {}
                Some(Err(e)) => panic!("recv failed: {e}"),
                None => {
                    cancelled += 1;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        }
        // Nothing more than was sent arrives either.
        let extra = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await;
        assert!(
            !matches!(extra, Ok(Ok(Some(_)))),
            "a message beyond the {N} sent arrived"
        );
        consumer.close().await;
        producer.close().await;
        (received, cancelled)
    });
    eprintln!("received {received} of {N}; {cancelled} recv calls cancelled");
    assert!(
        cancelled > 0,
        "no recv was cancelled: the test proved nothing"
    );
    assert_eq!(
        received, N,
        "{cancelled} cancelled recv calls lost messages"
    );
}
