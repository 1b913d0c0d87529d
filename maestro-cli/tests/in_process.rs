//! In-process cluster: the control broker on its own thread, a worker and an inspector as
//! tasks, and the CLI's `run` called directly.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use clap::Parser;
use maestro_cli::{Cli, report::PeerStatus};
use maestro_control::{PeerArgs, PeerConfig};
use maestro_protocol::Role;
use maestro_testkit::{free_port, unique_cluster};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

fn peer_config(url: &str, cluster: &str, name: &str, role: Role) -> PeerConfig {
    #[derive(Parser)]
    struct A {
        #[command(flatten)]
        p: PeerArgs,
    }
    A::parse_from(["x", "-m", url, "--cluster", cluster, "--name", name])
        .p
        .into_config(role, &["ping", "stats", "halt"])
        .unwrap()
}

async fn cli(args: &[&str]) -> maestro_cli::Outcome {
    let cli =
        Cli::try_parse_from(std::iter::once("maestro-cli").chain(args.iter().copied())).unwrap();
    tokio::time::timeout(T, maestro_cli::run(cli, CancellationToken::new()))
        .await
        .expect("cli finished in time")
        .expect("cli ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_ping_and_one_halts() {
    let port = free_port();
    let config = maestro_broker::BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        ..Default::default()
    };
    maestro_broker::start(&config).await.unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let cluster = unique_cluster().to_string();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(maestro_worker::run(
        peer_config(&url, &cluster, "w", Role::Worker),
        shutdown.child_token(),
    ));
    let inspector = tokio::spawn(maestro_inspector::run(
        peer_config(&url, &cluster, "i", Role::Inspector),
        shutdown.child_token(),
    ));

    let args = ["-m", url.as_str(), "--cluster", cluster.as_str(), "ping"];
    let mut ready = false;
    for _ in 0..100 {
        if cli(&args)
            .await
            .peers
            .iter()
            .filter(|p| p.status == PeerStatus::Ok)
            .count()
            == 2
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "peers never answered");

    // Two controllers at once: each gets exactly its own replies.
    let (a, b) = tokio::join!(cli(&args), cli(&args));
    for outcome in [&a, &b] {
        assert_eq!(outcome.code, 0, "{:?}", outcome.problem);
        assert_eq!(outcome.peers.len(), 2);
        assert!(
            outcome
                .peers
                .iter()
                .all(|p| p.status == PeerStatus::Ok && p.rtt_us.is_some())
        );
    }

    let halt = cli(&[
        "-m",
        &url,
        "--cluster",
        &cluster,
        "halt",
        "--role",
        "worker",
    ])
    .await;
    assert_eq!(halt.code, 0, "{:?}", halt.problem);
    assert_eq!(halt.peers.len(), 1);
    assert_eq!(halt.peers[0].name, "w");
    tokio::time::timeout(T, worker)
        .await
        .expect("worker stopped")
        .unwrap()
        .unwrap();
    assert!(!inspector.is_finished());
    shutdown.cancel();
    tokio::time::timeout(T, inspector)
        .await
        .expect("inspector stopped")
        .unwrap()
        .unwrap();
}
