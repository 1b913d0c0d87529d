//! The deployment files that cannot run here: the Kubernetes kustomization is rendered and
//! every manifest validated against the Kubernetes schemas (strict), its plans are checked
//! by `maestro-cli run --check`, and the systemd units pass `systemd-analyze verify`. Each
//! check is shown to fail on a broken copy, so none of them can pass vacuously.
//!
//! Needs `kubectl` (for `kubectl kustomize`), PyPI's `kubernetes-validate` and
//! `systemd-analyze`; `.ci/test` installs what is missing. A missing tool fails the test.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{output_text, repo_root, run_cli, tool};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn temp_dir(name: &str) -> maestro_testkit::TestDir {
    maestro_testkit::test_dir(&format!("deploy-{name}"))
}

#[test]
fn kubernetes_manifests_render_and_validate_against_the_schemas() {
    let dir = temp_dir("k8s");
    // The kustomization as a user has it: a copy, with the keys `certs init` writes.
    let copy = dir.join("kubernetes");
    let cp = tool(
        "cp",
        &[
            "-r",
            repo_root().join("deploy/kubernetes").to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert!(cp.status.success(), "{}", output_text(&cp));
    let _ = std::fs::remove_dir_all(copy.join("keys"));
    // Without the keys, rendering fails and names the missing file.
    let missing = tool("kubectl", &["kustomize", copy.to_str().unwrap()]);
    assert!(!missing.status.success(), "{}", output_text(&missing));
    assert!(
        output_text(&missing).contains("peer.key"),
        "{}",
        output_text(&missing)
    );
    let keys = copy.join("keys");
    let init = run_cli(
        &["certs", "init", "--keys-only", keys.to_str().unwrap()],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(init.code, Some(0), "{init:?}");
    let rendered = tool("kubectl", &["kustomize", copy.to_str().unwrap()]);
    assert!(rendered.status.success(), "{}", output_text(&rendered));
    let yaml = String::from_utf8(rendered.stdout).unwrap();
    let mut kinds: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "Deployment",
            "Job",
            "PersistentVolumeClaim",
            "Secret",
            "Secret",
            "Service"
        ],
        "{yaml}"
    );
    // Least privilege: the peers' Secret holds no controller key; both are mounted.
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    let secret = |name: &str| {
        docs.iter()
            .find(|d| d.contains("kind: Secret") && d.contains(&format!("name: {name}-")))
            .unwrap_or_else(|| panic!("no Secret {name}: {yaml}"))
            .to_string()
    };
    let peer = secret("maestro-peer-keys");
    assert!(
        peer.contains("peer.key:") && peer.contains("controller.pub:"),
        "{peer}"
    );
    assert!(!peer.contains("controller.key:"), "{peer}");
    let controller = secret("maestro-controller-keys");
    assert!(controller.contains("controller.key:") && !controller.contains("peer.key:"));
    assert_eq!(
        yaml.matches("value: /var/lib/maestro/keys").count(),
        3,
        "{yaml}"
    );
    let good = dir.join("maestro.yaml");
    std::fs::write(&good, &yaml).unwrap();
    let valid = tool(
        "kubernetes-validate",
        &["--strict", "--quiet", good.to_str().unwrap()],
    );
    assert!(valid.status.success(), "{}", output_text(&valid));

    // The validator does reject a broken manifest (a string where a count belongs).
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, yaml.replacen("replicas: 3", "replicas: \"three\"", 1)).unwrap();
    let invalid = tool(
        "kubernetes-validate",
        &["--strict", "--quiet", bad.to_str().unwrap()],
    );
    assert!(!invalid.status.success(), "{}", output_text(&invalid));
    assert!(
        String::from_utf8_lossy(&invalid.stdout).contains("spec.replicas")
            || String::from_utf8_lossy(&invalid.stderr).contains("spec.replicas"),
        "{}",
        output_text(&invalid)
    );

    // The Job runs a plan the ConfigMap holds, and that plan is valid.
    assert!(yaml.contains("/plans/mqtt-smoke.toml"), "{yaml}");
    for entry in std::fs::read_dir(repo_root().join("deploy/kubernetes/plans")).unwrap() {
        let path = entry.unwrap().path();
        let check = run_cli(
            &["run", path.to_str().unwrap(), "--check"],
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(check.code, Some(0), "{}: {check:?}", path.display());
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            yaml.contains(&format!("{name}: |")),
            "{name} not in the ConfigMap"
        );
    }
}

/// The units with their binaries pointed at the workspace's build (verify checks that
/// `ExecStart` is executable).
fn units_in(dir: &Path) -> Vec<PathBuf> {
    let bin = maestro_testkit::bin_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "service") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("/usr/local/bin/", &format!("{}/", bin.display()));
            let to = dir.join(path.file_name().unwrap());
            std::fs::write(&to, text).unwrap();
            out.push(to);
        }
    }
    out.sort();
    out
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = temp_dir("systemd");
    let units = units_in(&dir);
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "maestro-broker.service",
            "maestro-inspector.service",
            "maestro-worker.service"
        ]
    );
    // Workers and inspectors ship with signed notes: the peer key and the controller's
    // public key as credentials, never the controller key.
    for unit in &units[1..] {
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(text.contains("LoadCredential=peer.key:"), "{text}");
        assert!(text.contains("LoadCredential=controller.pub:"), "{text}");
        assert!(text.contains("MAESTRO_KEYS=%d"), "{text}");
        assert!(!text.contains("controller.key"), "{text}");
    }
    for unit in &units {
        let v = tool("systemd-analyze", &["verify", unit.to_str().unwrap()]);
        // verify only warns about bad values: any output is a failure.
        assert!(
            v.status.success() && v.stdout.is_empty() && v.stderr.is_empty(),
            "{}: {}",
            unit.display(),
            output_text(&v)
        );
    }
    // A broken unit is noticed.
    let bad = dir.join("broken.service");
    let text_bad = std::fs::read_to_string(&units[2])
        .unwrap()
        .replace("Restart=on-failure", "Restart=whenever");
    std::fs::write(&bad, text_bad).unwrap();
    let v = tool("systemd-analyze", &["verify", bad.to_str().unwrap()]);
    assert!(
        !v.status.success() || !v.stderr.is_empty(),
        "a broken unit passed: {}",
        output_text(&v)
    );
}
