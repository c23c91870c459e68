//! The deployment files, checked by real tools: the Kubernetes manifests
//! against the Kubernetes API's schemas (`kubernetes-validate` from PyPI,
//! which `./dev` installs into target/tools/venv; `kubectl --dry-run` needs
//! an API server, and none runs here), the compose file by Debian's
//! `docker-compose config`, and the two against each other (the same
//! settings, the same needs). The compose deployment itself is built
//! offline and run for real in `compose.rs`; Kubernetes is not run (no API
//! server here).

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `tool`, or `None` (a failure under CI) when it is not installed.
fn tool(path: &Path) -> Option<&Path> {
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is missing (./dev install puts it there)",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

#[test]
fn the_kubernetes_manifests_match_the_api_schemas() {
    let validate = repo().join("target/tools/venv/bin/kubernetes-validate");
    let Some(validate) = tool(&validate) else {
        return;
    };
    let out = Command::new(validate)
        .arg("--strict")
        .arg(repo().join("deploy/kubernetes/stacklab.yaml"))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for kind in [
        "secret/stacklab-database",
        "daemonset/stacklab",
        "service/stacklab",
    ] {
        assert!(
            said.contains(&format!("passed for resource {kind}")),
            "{said}"
        );
    }
}

#[test]
fn the_compose_file_is_valid() {
    let Some(compose) = tool(Path::new("/usr/bin/docker-compose")) else {
        return;
    };
    let out = Command::new(compose)
        .args(["-f", "compose.yaml", "config"])
        .current_dir(repo())
        .env("POSTGRES_PASSWORD", "test-password")
        .env("STACKLAB_INSTRUCTOR_TOKEN", "test-token")
        .output()
        .unwrap();
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two replicas on the shared database, nginx in front.
    for service in ["postgres:", "replica-1:", "replica-2:", "nginx:"] {
        assert!(config.contains(service), "{config}");
    }
    assert!(config.contains("STACKLAB_REPLICA: replica-2"), "{config}");
    // Without the secrets it refuses to start, naming them.
    let out = Command::new(compose)
        .args(["-f", "compose.yaml", "config"])
        .current_dir(repo())
        .env_remove("POSTGRES_PASSWORD")
        .env_remove("STACKLAB_INSTRUCTOR_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The manifests and compose file set the same settings with the same
/// values, and ask for the same host access (network, PID namespace, the
/// Docker socket, /dev/kvm, the cgroup tree).
#[test]
fn compose_and_kubernetes_agree() {
    let compose = std::fs::read_to_string(repo().join("compose.yaml")).unwrap();
    let kube = std::fs::read_to_string(repo().join("deploy/kubernetes/stacklab.yaml")).unwrap();
    for setting in [
        "STACKLAB_DATABASE_URL",
        "STACKLAB_REPLICA",
        "STACKLAB_ADDR",
        "STACKLAB_ADVERTISE_URL",
        "STACKLAB_INSTRUCTOR_TOKEN",
        "STACKLAB_TRUSTED_PROXIES",
        "STACKLAB_HEARTBEAT_SECS",
        "STACKLAB_HOST_LOST_SECS",
        "/var/run/docker.sock",
        "/dev/kvm",
        "/sys/fs/cgroup",
    ] {
        assert!(compose.contains(setting), "compose.yaml lacks {setting}");
        assert!(kube.contains(setting), "the manifests lack {setting}");
    }
    for (c, k) in [
        (
            "STACKLAB_HEARTBEAT_SECS: ${STACKLAB_HEARTBEAT_SECS:-2}",
            "- name: STACKLAB_HEARTBEAT_SECS\n              value: \"2\"",
        ),
        (
            "STACKLAB_HOST_LOST_SECS: ${STACKLAB_HOST_LOST_SECS:-10}",
            "- name: STACKLAB_HOST_LOST_SECS\n              value: \"10\"",
        ),
        ("network_mode: host", "hostNetwork: true"),
        ("pid: host", "hostPID: true"),
    ] {
        assert!(compose.contains(c), "compose.yaml lacks {c}");
        assert!(kube.contains(k), "the manifests lack {k}");
    }
    // nginx and the ingress forward the client's address.
    let nginx = std::fs::read_to_string(repo().join("deploy/nginx.conf")).unwrap();
    assert!(nginx.contains("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"));
}
