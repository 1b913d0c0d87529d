//! `maestro-cli certs init`: the certificates it makes serve TLS on a real Mosquitto, and a
//! client that trusts another CA is refused, so the check can fail.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Mosquitto, output_text, run_cli, tool};
use std::path::Path;
use std::time::Duration;

fn init(dir: &Path, extra: &[&str]) -> maestro_testkit::CliRun {
    let mut args = vec!["certs", "init", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_cli(&args, Duration::from_secs(20)).unwrap()
}

#[test]
fn lab_certificates_serve_tls_on_mosquitto() {
    let root = maestro_testkit::test_dir("certs-it");
    let (lab, other) = (root.join("lab"), root.join("other"));
    let run = init(&lab, &["--san", "broker.lab"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("localhost, 127.0.0.1, broker.lab"),
        "{run:?}"
    );
    // Existing files are kept: a usage error that names the file.
    let again = init(&lab, &[]);
    assert_eq!(again.code, Some(2), "{again:?}");
    assert!(again.stderr.contains("ca.pem exists already"), "{again:?}");
    assert_eq!(init(&other, &[]).code, Some(0));

    // The key is written owner-only. Mosquitto started as root drops to its own user,
    // which must read it: the test hands it over as a user would (here, by mode).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        lab.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let file = |name: &str| lab.join(name).to_str().unwrap().to_owned();
    let mq = Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}",
        file("ca.pem"),
        file("server.pem"),
        file("server.key")
    ))
    .unwrap();
    let port = mq.port.to_string();
    let publish = |host: &str, ca: &Path| {
        tool(
            "mosquitto_pub",
            &[
                "-h",
                host,
                "-p",
                &port,
                "--cafile",
                ca.to_str().unwrap(),
                "-t",
                "tls/check",
                "-m",
                "hello",
            ],
        )
    };
    for host in ["localhost", "127.0.0.1"] {
        let ok = publish(host, &lab.join("ca.pem"));
        assert!(ok.status.success(), "{host}: {}", output_text(&ok));
    }
    // A client that trusts another CA refuses the server's certificate.
    let refused = publish("localhost", &other.join("ca.pem"));
    assert!(!refused.status.success(), "{}", output_text(&refused));
}
