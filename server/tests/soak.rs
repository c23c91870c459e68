//! The soak, bounded for CI: `stacklab bench soak --runs 60` drives a real
//! server with mixed runs while learners drop their streams, the Docker
//! engine restarts and the server is killed with SIGKILL and restarted.
//! The bench itself checks that nothing was lost or left behind and exits
//! non-zero if anything was; its report is kept in
//! `test-output/soak.txt`. (README: the 500-run figures.)
//!
//! Needs root (it restarts dockerd), the Docker engine with the demo
//! images, and /dev/kvm: what CI has.

use std::path::Path;
use std::process::Command;

const RUNS: &str = "60";

#[test]
fn a_soak_with_faults_loses_nothing_and_leaves_nothing() {
    let docker = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    // SAFETY: a plain getter.
    let root = unsafe { libc::geteuid() } == 0;
    if !docker || !root || !Path::new("/dev/kvm").exists() {
        let why = "the soak needs root, a running Docker engine and /dev/kvm";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        return eprintln!("skipped: {why}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_stacklab"))
        .args(["bench", "soak", "--runs", RUNS])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-output");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("soak.txt"), report.as_bytes()).unwrap();
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
