//! In-process cluster: the control broker on its own thread, a worker and an inspector as
//! tasks, and the CLI's `run` called directly.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use clap::Parser;
use maestro_cli::Cli;
use maestro_control::{PeerArgs, PeerConfig};
use maestro_controller::outcome::PeerStatus;
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
        maestro_inspector::InspectorConfig::default(),
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

/// The first event whose body `pick` takes, within the test's timeout.
async fn event<Picked>(
    controller: &mut maestro_cli::Controller,
    what: &str,
    pick: impl Fn(maestro_protocol::Body) -> Option<Picked>,
) -> Picked {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match controller
            .next(deadline, &CancellationToken::new())
            .await
            .unwrap()
        {
            Some(maestro_controller::Incoming::Event(n)) => {
                if let Some(picked) = pick(n.body) {
                    return picked;
                }
            }
            Some(_) => {}
            None => panic!("no {what}"),
        }
    }
}

/// Sends one request and waits for its reply.
async fn ask(
    controller: &mut maestro_cli::Controller,
    to: &maestro_protocol::PeerId,
    body: maestro_protocol::Body,
) -> maestro_protocol::Body {
    use maestro_controller::Incoming;
    let request = controller
        .send(&maestro_protocol::Target::Peer(to.clone()), body)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match controller
            .next(deadline, &CancellationToken::new())
            .await
            .unwrap()
        {
            Some(Incoming::Reply(note, _)) if note.correlation_id == Some(request.id) => {
                return note.body;
            }
            Some(_) => {}
            None => panic!("no reply to {}", request.body.kind()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lifecycle_is_idempotent_and_refuses_a_second_run() {
    use maestro_protocol::*;
    let control_port = free_port();
    let sut_port = free_port();
    for port in [control_port, sut_port] {
        maestro_broker::start(&maestro_broker::BrokerConfig {
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let url = format!("mqtt://127.0.0.1:{control_port}");
    let cluster = unique_cluster();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(maestro_worker::run(
        peer_config(&url, cluster.as_str(), "w", Role::Worker),
        shutdown.child_token(),
    ));
    let mut controller = maestro_cli::Controller::connect(&url.parse().unwrap(), &cluster, T)
        .await
        .unwrap();
    let mut worker_id = None;
    for _ in 0..100 {
        let ping = controller
            .request(
                &Target::All,
                Body::Ping(Ping {}),
                Duration::from_secs(2),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        if let Some(id) = ping.replies.keys().next() {
            worker_id = Some(id.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w = worker_id.expect("worker answered");
    let spec = TestSpec {
        size: MessageSize::Fixed(64),
        ..TestSpec::new(
            format!("mqtt://127.0.0.1:{sut_port}/life").parse().unwrap(),
            200.0,
            std::time::Duration::from_secs(60),
        )
    };
    let configure = |run: &str| {
        Body::Configure(Configure {
            run: RunId::new(run).unwrap(),
            spec: spec.clone(),
            producers: IdRange {
                first: 0,
                stride: 1,
                count: 1,
            },
            consumers: vec![ConsumerPlan {
                id: 0,
                topic: 0,
                subscription: 0,
            }],
            lease_ms: 5_000,
            producer_skews: Vec::new(),
        })
    };
    let a = RunId::new("run-a").unwrap();
    let code = |b: Body| match b {
        Body::Error(e) => format!("{:?}", e.code),
        other => other.kind().to_owned(),
    };
    assert_eq!(
        code(ask(&mut controller, &w, configure("run-a")).await),
        "configured"
    );
    assert_eq!(
        code(ask(&mut controller, &w, configure("run-a")).await),
        "configured",
        "configure is idempotent"
    );
    assert_eq!(
        code(ask(&mut controller, &w, configure("run-b")).await),
        "Busy"
    );
    let start = Body::Start(Start {
        run: a.clone(),
        start_at_us: maestro_control::now(),
    });
    assert_eq!(
        code(ask(&mut controller, &w, start.clone()).await),
        "started"
    );
    assert_eq!(
        code(ask(&mut controller, &w, start).await),
        "started",
        "start is idempotent"
    );
    let other = Body::Start(Start {
        run: RunId::new("run-b").unwrap(),
        start_at_us: maestro_control::now(),
    });
    assert_eq!(code(ask(&mut controller, &w, other).await), "UnknownRun");
    match ask(&mut controller, &w, Body::StatsRequest(StatsRequest {})).await {
        Body::Stats(s) => {
            assert_eq!(s.state, PeerState::Running);
            assert_eq!(s.run, Some(a.clone()));
        }
        other => panic!("{other:?}"),
    }
    // Something is sent before the stop (a busy machine may not run the producer at
    // once): the first run second's stats say so.
    event(&mut controller, "run stats with sends", |b| match b {
        Body::RunStats(s) if s.counters.sent > 0 => Some(()),
        _ => None,
    })
    .await;
    let stop = Body::Stop(Stop { run: a.clone() });
    assert_eq!(
        code(ask(&mut controller, &w, stop.clone()).await),
        "stopping"
    );
    assert_eq!(
        code(ask(&mut controller, &w, stop).await),
        "stopping",
        "stop is idempotent"
    );
    // The result arrives, and the worker is idle again.
    let result = event(&mut controller, "result", |b| match b {
        Body::RunResult(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(result.run, a);
    assert!(result.counters.sent > 0);
    match ask(&mut controller, &w, Body::StatsRequest(StatsRequest {})).await {
        Body::Stats(s) => assert_eq!((s.state, s.run), (PeerState::Idle, None)),
        other => panic!("{other:?}"),
    }
    shutdown.cancel();
    tokio::time::timeout(T, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A controller that asks some time after it connected (a plan run probes its SUT first)
/// still waits for the peers already there: their retained presences arrived meanwhile,
/// and the request counts them before it decides everyone answered. The presence barrier
/// (the controller's own note, which comes back after every retained one) settles it
/// long before the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_request_waits_for_the_peers_already_there() {
    use maestro_protocol::{Body, Ping, Target};
    let port = free_port();
    maestro_broker::start(&maestro_broker::BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let cluster = unique_cluster();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(maestro_worker::run(
        peer_config(&url, cluster.as_str(), "w", Role::Worker),
        shutdown.child_token(),
    ));
    let ping = |delay: Duration| {
        let (url, cluster) = (url.clone(), cluster.clone());
        async move {
            let mut c = maestro_cli::Controller::connect(&url.parse().unwrap(), &cluster, T)
                .await
                .unwrap();
            tokio::time::sleep(delay).await;
            let asked = std::time::Instant::now();
            let ping = c
                .request(
                    &Target::All,
                    Body::Ping(Ping {}),
                    Duration::from_secs(10),
                    &CancellationToken::new(),
                )
                .await
                .unwrap();
            (ping.replies.len(), asked.elapsed())
        }
    };
    // The worker is up once a ping reaches it.
    let mut up = false;
    for _ in 0..100 {
        if ping(Duration::ZERO).await.0 == 1 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the worker never answered");
    for delay in [
        Duration::ZERO,
        Duration::from_millis(50),
        Duration::from_millis(500),
    ] {
        let (answered, took) = ping(delay).await;
        assert_eq!(answered, 1, "asked {delay:?} after connecting");
        assert!(
            took < maestro_controller::client::PRESENCE_SETTLE,
            "asked {delay:?} after connecting, settled only after {took:?}: the barrier never came back"
        );
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(T, worker).await;
}
