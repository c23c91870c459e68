//! The soak, bounded for CI: `stacklab bench soak --runs 60` drives a real
//! server with mixed runs while learners drop their streams, the Docker
//! engine restarts and the server is killed with SIGKILL and restarted.
//! The bench itself checks that nothing was lost or left behind and exits
//! non-zero if anything was; its report is kept in
//! `test-output/soak.txt`. (README: the 500-run figures.)
//!
//! The engine it restarts is its own private `dockerd`; the host's engine
//! is left alone, which this test checks: a sentinel container on the
//! host's engine runs through the soak with the same start time, the
//! host's `dockerd` keeps its PID, its default bridge `docker0` is the
//! same interface and takes a new container, and the private daemon's
//! directory is gone afterwards.
//!
//! Needs root (to start a dockerd), the Docker engine with the demo
//! images, and /dev/kvm: what CI has.

use std::path::Path;
use std::process::Command;

const RUNS: &str = "60";

#[test]
fn a_soak_with_faults_loses_nothing_and_leaves_nothing() {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    // SAFETY: a plain getter.
    let root = unsafe { libc::geteuid() } == 0;
    if !engine || !root || !Path::new("/dev/kvm").exists() {
        let why = "the soak needs root, a running Docker engine and /dev/kvm";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        return eprintln!("skipped: {why}");
    }
    let host_dockerd = dockerd_pid();
    let interfaces = host_interfaces();
    assert!(
        host_dockerd.is_some(),
        "no dockerd PID for the host's engine"
    );
    let sentinel = format!("stacklab-soak-sentinel-{}", std::process::id());
    let _ = docker(&["rm", "-f", &sentinel]);
    let started = docker(&[
        "run",
        "-d",
        "--name",
        &sentinel,
        "--entrypoint",
        "sleep",
        "stacklab/postgres:15-offline",
        "3600",
    ]);
    assert!(started.is_some(), "could not start the sentinel container");
    let sentinel_started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &sentinel]);

    let out = Command::new(env!("CARGO_BIN_EXE_stacklab"))
        .args(["bench", "soak", "--runs", RUNS])
        .output()
        .unwrap();

    let report = String::from_utf8_lossy(&out.stdout);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-output");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("soak.txt"), report.as_bytes()).unwrap();

    // The host's engine: same daemon, the sentinel never stopped.
    let sentinel_after = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.StartedAt}}",
        &sentinel,
    ]);
    let _ = docker(&["rm", "-f", &sentinel]);
    assert_eq!(
        dockerd_pid(),
        host_dockerd,
        "the host's dockerd was restarted"
    );
    assert_eq!(
        sentinel_after,
        sentinel_started.map(|s| format!("true {s}")),
        "the host engine's sentinel container was stopped or restarted"
    );
    // Its network too: the host engine's default bridge is the same
    // interface, and takes a new container.
    assert_eq!(
        host_interfaces(),
        interfaces,
        "the host engine's docker0 was deleted (or made again)"
    );
    assert!(
        docker(&[
            "run",
            "--rm",
            "--entrypoint",
            "true",
            "stacklab/postgres:15-offline"
        ])
        .is_some(),
        "a new container on the host engine's default bridge failed after the soak"
    );
    // The private engine cleaned up after itself.
    let private = report
        .split("(under ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(std::path::PathBuf::from)
        .expect("the report names the private engine's directory");
    assert!(
        !private.exists(),
        "the private engine's directory {} was left",
        private.display()
    );
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("runs accepted          {RUNS} of {RUNS}")),
        "{report}"
    );
    assert!(
        report.contains("lost                   0 accepted runs"),
        "{report}"
    );
}

/// `docker args` on the host's engine: its trimmed output, if it succeeded.
fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .args(args)
        .env_remove("DOCKER_HOST")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The PID of the host's dockerd, from its pid file.
fn dockerd_pid() -> Option<u32> {
    std::fs::read_to_string("/var/run/docker.pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The host engine's default bridge, `docker0`, by its interface index
/// (deleted and made again, it would have another): what a dockerd on the
/// host's network deletes.
fn host_interfaces() -> Option<String> {
    std::fs::read_to_string("/sys/class/net/docker0/ifindex")
        .ok()
        .map(|i| i.trim().to_owned())
}
