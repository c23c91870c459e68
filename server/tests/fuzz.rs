//! The API fuzzed from its own description: Schemathesis (from PyPI; ./dev
//! installs it in target/tools/venv) reads `/api/openapi.json` of a real
//! `stacklab serve` and sends generated requests to every operation, valid
//! and not: no answer may be a 5xx (but the documented 503 of a demo this
//! host cannot run), each must match its documented schema, status and
//! content type. Bounded: examples per operation and a time cap. The report
//! (JUnit XML) goes to `test-output/schemathesis/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{spawn_server, INSTRUCTOR_TOKEN};

const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Generated requests per operation and phase.
const EXAMPLES: &str = "15";
/// The whole run's time cap, in seconds.
const MAX_SECS: &str = "150";

/// The schemathesis command: `STACKLAB_SCHEMATHESIS`, the one ./dev
/// installs, or one on PATH.
fn schemathesis() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("STACKLAB_SCHEMATHESIS").map(PathBuf::from),
        Some(Path::new(REPO_ROOT).join("target/tools/venv/bin/schemathesis")),
        Some(PathBuf::from("schemathesis")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn schemathesis_finds_nothing_in_the_api() {
    let Some(tool) = schemathesis() else {
        let why = "schemathesis is not installed (./dev install puts it in target/tools/venv)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        return eprintln!("skipped: {why}");
    };
    let data = tempfile::tempdir().unwrap();
    let (mut server, addr) = spawn_server(data.path());
    let report = Path::new(REPO_ROOT).join("test-output/schemathesis");
    std::fs::create_dir_all(&report).unwrap();
    let out = Command::new(&tool)
        .arg("--config-file")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{addr}/api/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
            "--max-examples",
            EXAMPLES,
            "--max-time",
            MAX_SECS,
            "--request-timeout",
            "20",
            "--header",
            &format!("Authorization: Bearer {INSTRUCTOR_TOKEN}"),
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&report)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    // SIGTERM: the server cancels what the fuzzer started and removes its
    // containers before it exits.
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let stopped = server.wait().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::write(report.join("output.txt"), text.as_bytes()).unwrap();
    assert!(
        out.status.success(),
        "schemathesis found problems (report in {}):\n{}",
        report.display(),
        &text[text.len().saturating_sub(6000)..]
    );
    // "Selected: N/N" and "Tested: N": every operation, whatever N is.
    let count = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_owned())
    };
    let selected = count("Selected:").expect("schemathesis says what it selected");
    let (chosen, total) = selected.split_once('/').unwrap_or((&selected, ""));
    assert_eq!(chosen, total, "every operation was selected:\n{text}");
    assert_eq!(
        count("Tested:").as_deref(),
        Some(total),
        "every operation was tested:\n{text}"
    );
    assert!(stopped.success(), "the server stopped cleanly: {stopped:?}");
}
