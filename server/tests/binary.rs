//! The `stacklab` binary itself, as a user runs it: from the repository root,
//! on a free port, stopped with SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn http_get(addr: &str, path: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_finds_the_frontend_and_stops_on_sigterm() {
    let repo_root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stacklab"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path().join("state"))
        .current_dir(repo_root)
        .env_remove("STACKLAB_STATIC_DIR")
        .env("RUST_LOG", "stacklab_server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut lines = Vec::new();
    for _ in 0..20 {
        let mut line = String::new();
        if log.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = Some(rest.trim().to_owned());
            break;
        }
        lines.push(line);
    }
    let addr = addr.unwrap_or_else(|| panic!("no 'listening on' line; log: {lines:?}"));
    assert!(
        data_dir.path().join("state").is_dir(),
        "the data dir is created"
    );

    let health = http_get(&addr, "/api/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let page = http_get(&addr, "/lessons/containers");
    if std::path::Path::new(repo_root)
        .join("frontend/dist/index.html")
        .is_file()
    {
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("<html"), "deep link serves the app shell");
    } else {
        assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    }

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}
