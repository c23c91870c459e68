//! The VMM's jail, tested the way Firecracker tests its jailer: from the
//! outside (what the host sees), from the inside (what the VMM can reach),
//! and by making it misbehave (a forbidden system call must end it).
//!
//! Needs root (the server's VMMs jail themselves as the `stacklab-vmm`
//! user, which ./dev creates) and /dev/kvm; `strace` for the trace test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stacklab_api::{ErrorCode, Phase};
use stacklab_server::backends::kvm::VmArtifacts;
use stacklab_vmm::jail::seccomp::{FORBIDDEN_EXIT, VMM_ALLOWED};
use stacklab_vmm::protocol::Line;

/// The built VMM and guest, and the jail's ids, or why this host cannot
/// run these tests (a failure in CI).
fn artifacts() -> Option<VmArtifacts> {
    let why = if !std::path::Path::new("/dev/kvm").exists() {
        "/dev/kvm is absent".to_owned()
    } else {
        // SAFETY: a plain getter.
        if unsafe { libc::geteuid() } != 0 {
            "the jail needs root to enter its namespaces".to_owned()
        } else {
            match VmArtifacts::locate() {
                Ok(a) => return Some(a),
                Err(e) => e,
            }
        }
    };
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// `stacklab-vmm --image GUEST --jail UID:GID` plus `extra`.
fn jailed_vmm(a: &VmArtifacts, extra: &[&str]) -> Command {
    let mut cmd = Command::new(&a.vmm);
    cmd.arg("--image")
        .arg(&a.guest)
        .arg("--jail")
        .arg(format!("{}:{}", a.jail.uid, a.jail.gid))
        .args(extra);
    cmd
}

#[test]
fn inside_the_jail_there_are_no_host_files_no_network_and_no_root() {
    let Some(a) = artifacts() else { return };
    // A listener the host can reach: the jail must not.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_ok(),
        "the host reaches it"
    );
    let out = jailed_vmm(&a, &["--jail-selftest", &format!("probe={addr}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(probe["pid"], 1, "PID 1 of its own namespace: {probe}");
    assert_eq!(probe["uid"], a.jail.uid, "{probe}");
    assert_eq!(probe["gid"], a.jail.gid, "{probe}");
    assert!(
        probe["etc_passwd"].as_str().unwrap().starts_with("absent"),
        "{probe}"
    );
    assert_eq!(
        probe["root_entries"],
        serde_json::json!(["dev"]),
        "an empty root but /dev"
    );
    assert!(
        probe["network"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{probe}"
    );
}

/// Runs the jailed VMM with a self-test that makes a forbidden call;
/// returns its exit code and its last protocol line.
fn forbidden(a: &VmArtifacts, call: &str) -> (Option<i32>, Line) {
    let out = jailed_vmm(a, &["--jail-selftest", call]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let line = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"));
    (out.status.code(), line)
}

#[test]
fn a_forbidden_system_call_ends_the_vmm_with_a_clear_error() {
    let Some(a) = artifacts() else { return };
    for (call, nr) in [("socket", libc::SYS_socket), ("execve", libc::SYS_execve)] {
        let (status, line) = forbidden(&a, call);
        assert_eq!(status, Some(FORBIDDEN_EXIT), "{call}");
        let Line::Error { code, message } = line else {
            panic!("{call}: not an error line")
        };
        assert_eq!(code, ErrorCode::SyscallForbidden);
        assert!(
            message.contains(&format!("system call {nr} ({call})")),
            "{message}"
        );
    }
}

/// A VMM started with `--hold`: waits for its ready step, holds it there
/// for `hold`, lets it go, and returns its remaining lines once it exited
/// successfully.
fn held_then_let_go(child: &mut std::process::Child, hold: Duration) -> Vec<String> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    lines_until(&mut out, Phase::Ready);
    std::thread::sleep(hold);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let rest: Vec<String> = out.lines().map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    rest
}

/// Reads the VMM's lines until `phase`, returning them.
fn lines_until(out: &mut impl BufRead, phase: Phase) -> Vec<Line> {
    let mut seen = vec![];
    for line in out.lines() {
        let line: Line = serde_json::from_str(&line.unwrap()).unwrap();
        let done = matches!(&line, Line::Event(e) if e.phase == phase);
        seen.push(line);
        if done {
            return seen;
        }
    }
    panic!("the VMM ended before {phase}: {seen:?}")
}

fn exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn the_jailed_vmm_is_a_child_of_its_waiter_and_dies_with_it() {
    let Some(a) = artifacts() else { return };
    let mut child = jailed_vmm(&a, &["--hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = lines_until(&mut out, Phase::Ready);
    assert!(
        matches!(&lines[0], Line::Event(e) if e.phase == Phase::Jailed && e.detail.contains("seccomp")),
        "the jail is the first step: {:?}",
        lines[0]
    );
    let waiter = child.id();
    let kids = std::fs::read_to_string(format!("/proc/{waiter}/task/{waiter}/children")).unwrap();
    let vmm: u32 = kids.trim().parse().expect("exactly one child");
    let status = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == a.jail.uid.to_string()),
        "{uid_line}"
    );
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    assert!(
        status.lines().any(|l| l == "Seccomp:\t2"),
        "filter mode: {status}"
    );
    // The server kills the process it started; the VMM must follow.
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    while exists(vmm) && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!exists(vmm), "the jailed VMM outlived its waiter");
}

#[test]
fn a_traced_run_stays_inside_the_allow_list() {
    let Some(a) = artifacts() else { return };
    if Command::new("strace").arg("-V").output().is_err() {
        let why = "strace is not installed (apt-get install strace; ./dev does)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        return eprintln!("skipped: {why}");
    }
    let trace = std::env::temp_dir().join(format!("stacklab-jail-trace-{}", std::process::id()));
    let mut cmd = Command::new("strace");
    cmd.arg("-f").arg("-qq").arg("-o").arg(&trace).arg(&a.vmm);
    let mut child = cmd
        .arg("--image")
        .arg(&a.guest)
        .arg("--jail")
        .arg(format!("{}:{}", a.jail.uid, a.jail.gid))
        .arg("--hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    held_then_let_go(&mut child, Duration::ZERO);
    let text = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    // The VMM is the process that creates the VM; its calls after its
    // filter went on are the ones that count.
    let pid_of = |l: &str| l.split_whitespace().next().unwrap_or_default().to_owned();
    let vmm_pid = pid_of(
        text.lines()
            .find(|l| l.contains("KVM_CREATE_VM"))
            .expect("the trace shows the VM being created"),
    );
    let filtered = text
        .lines()
        .position(|l| pid_of(l) == vmm_pid && l.contains("seccomp(SECCOMP_SET_MODE_FILTER"))
        .expect("the trace shows the VMM's filter being applied");
    let allowed: Vec<&str> = VMM_ALLOWED.iter().map(|(name, ..)| *name).collect();
    let mut calls = std::collections::BTreeSet::new();
    for line in text.lines().skip(filtered + 1) {
        let mut parts = line.split_whitespace();
        if parts.next() != Some(vmm_pid.as_str()) {
            continue;
        }
        let Some(call) = parts.next().and_then(|c| c.split('(').next()) else {
            continue;
        };
        if call.is_empty()
            || call.starts_with("---")
            || call.starts_with("+++")
            || call.starts_with('<')
        {
            continue;
        }
        calls.insert(call.to_owned());
    }
    assert!(
        calls.contains("ioctl") && calls.contains("write"),
        "{calls:?}"
    );
    let outside: Vec<_> = calls
        .iter()
        .filter(|c| !allowed.contains(&c.as_str()))
        .collect();
    assert!(
        outside.is_empty(),
        "calls outside the allow-list: {outside:?} (all: {calls:?})"
    );
}

/// Time held at ready is the server's, not the guest's: a VM held well
/// past its boot deadline (a density step waiting for its slowest
/// sibling) still finishes, instead of failing a guest that was ready.
#[test]
fn time_held_at_ready_does_not_count_against_the_boot_deadline() {
    let Some(a) = artifacts() else { return };
    let mut child = jailed_vmm(&a, &["--hold", "--deadline-ms", "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rest = held_then_let_go(&mut child, Duration::from_millis(900));
    let last: Line = serde_json::from_str(rest.last().expect("a last line")).unwrap();
    assert!(matches!(last, Line::Done { .. }), "{last:?}");
}
