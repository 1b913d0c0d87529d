//! Every client of a NATS JetStream run makes sure of the run's stream when it connects,
//! all at once. nats-server 2.9 refuses all but one of simultaneous creates of one stream
//! ("subjects overlap with an existing stream", error 10065): the others must take the
//! stream that is there, not fail the run. (A CI run's configure failed that way, on a
//! loaded machine: the refusal is a race in the server, so this drives 24 creates at
//! once, five times over, to give it its chances.)

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::{ConsumerPlan, RunId};
use maestro_testkit::ScriptedSut;
use maestro_worker::driver::nats::NatsDriver;
use maestro_worker::driver::{Consumer, Driver};

#[test]
fn consumers_connecting_at_once_share_the_stream_one_of_them_made() {
    let nats = ScriptedSut::nats().unwrap();
    let sut = format!("{}?jetstream=true&storage=memory", nats.url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for round in 0..5 {
            let run = RunId::new(format!("at-once{round}-{}", std::process::id())).unwrap();
            let driver = NatsDriver::from_url(&sut, &run).unwrap();
            let plans: Vec<ConsumerPlan> = (0..24)
                .map(|id| ConsumerPlan {
                    id,
                    topic: id % 3,
                    subscription: 0,
                })
                .collect();
            let opened =
                futures_util::future::join_all(plans.iter().map(|p| driver.consumer(p))).await;
            let mut consumers = Vec::new();
            for (p, c) in plans.iter().zip(opened) {
                consumers
                    .push(c.unwrap_or_else(|e| panic!("round {round}, consumer {}: {e}", p.id)));
            }
            for c in consumers {
                c.close().await;
            }
        }
    });
}
