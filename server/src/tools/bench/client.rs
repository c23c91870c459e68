//! What the benches that start their own `stacklab serve` share: starting
//! it, plain HTTP calls and event streams to it as a browser makes them,
//! and what a server leaves behind (containers, VMMs, files, threads).

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};
use stacklab_api::{EventKind, RunEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The instructor token the benches' servers get.
pub(crate) const TOKEN: &str = "bench-instructor";

/// One request over its own connection: status and body. `body` is
/// (JSON, with the instructor token).
pub(crate) async fn call(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<(&str, bool)>,
) -> anyhow::Result<(u16, String)> {
    call_on(addr, method, path, body)
        .await
        .map(|r| (r.status, r.body))
}

/// What a [`call_on`] got back.
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
    /// The replica that answered (`X-Stacklab-Replica`), if named.
    pub replica: Option<String>,
}

/// As [`call`], with the replica that answered.
pub(crate) async fn call_on(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<(&str, bool)>,
) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (text, token) = body.unwrap_or(("", false));
    let bearer = format!("Bearer {TOKEN}");
    let auth: &[(&str, &str)] = if token {
        &[("Authorization", &bearer)]
    } else {
        &[]
    };
    let answer = crate::http1::exchange(stream, addr, method, path, auth, text).await?;
    Ok(Reply {
        status: answer.status,
        replica: answer.header("x-stacklab-replica").map(str::to_owned),
        body: answer.body,
    })
}

/// Follows `/api/runs/{id}/events` until `finished`; every event.
pub(crate) async fn events(addr: &str, id: &str) -> anyhow::Result<Vec<RunEvent>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /api/runs/{id}/events HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut seen = String::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("the event stream of run {id} ended before `finished`");
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        let events: Vec<RunEvent> = seen
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        if events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Finished { .. }))
        {
            return Ok(events);
        }
    }
}

/// The server process's open files, threads and RSS.
pub(crate) struct ServerUse {
    pub fds: usize,
    pub threads: u64,
    pub rss_kib: u64,
}

impl ServerUse {
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        ServerUse {
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
            threads: field("Threads:"),
            rss_kib: field("VmRSS:"),
        }
    }
}

/// Demo containers on this host (by the label every demo container has).
pub(crate) fn demo_containers() -> Option<usize> {
    demo_containers_with(&mut Command::new("docker"))
}

/// [`demo_containers`], asked with `docker` (a command set up for an engine).
pub(crate) fn demo_containers_with(docker: &mut Command) -> Option<usize> {
    let out = docker
        .args(["ps", "-aq", "--filter"])
        .arg(format!(
            "label={}",
            crate::backends::docker::reaper::LABEL_INSTANCE
        ))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).lines().count())
}

/// Live processes (not zombies) named `name`: children of `parent`, or
/// any on this host.
pub(crate) fn processes_named(name: &str, parent: Option<u32>) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // "pid (comm) state ppid …"; comm may hold spaces, so split at ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let comm = head.split_once('(').map_or("", |(_, c)| c);
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            comm == name && state != "Z" && parent.is_none_or(|p| ppid == Some(p))
        })
        .count()
}

/// A fresh directory for a bench's server data, named after the bench.
pub(crate) fn tempdir(bench: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("stacklab-bench-{bench}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `stacklab serve` (this binary) on `addr` (port 0: a free one), with its
/// history in `data` and `extra` flags; the child and the address it
/// listens on.
pub(crate) fn spawn_server(
    data: &Path,
    addr: &str,
    extra: &[String],
) -> anyhow::Result<(Child, String)> {
    spawn_server_env(data, addr, extra, &[])
}

/// [`spawn_server`] with environment variables (`DOCKER_HOST`).
pub(crate) fn spawn_server_env(
    data: &Path,
    addr: &str,
    extra: &[String],
    envs: &[(&str, &str)],
) -> anyhow::Result<(Child, String)> {
    // This binary's path as it was at the first start: a bench that
    // restarts its server must not lose it if the file is rebuilt meanwhile.
    static SELF: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let exe = SELF
        .get_or_init(|| std::env::current_exe().unwrap_or_else(|_| "stacklab".into()))
        .clone();
    let mut serve = Command::new(exe);
    serve
        .args(["serve", "--addr", addr, "--data-dir"])
        .arg(data)
        .args(extra)
        .envs(envs.iter().copied());
    let mut child = serve
        .env("STACKLAB_INSTRUCTOR_TOKEN", TOKEN)
        .env("RUST_LOG", "stacklab_server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start `stacklab serve`")?;
    let mut log = std::io::BufReader::new(child.stderr.take().context("piped")?);
    loop {
        let mut line = String::new();
        if log.read_line(&mut line)? == 0 {
            let _ = child.wait();
            bail!("`stacklab serve` exited before listening");
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.trim().to_owned();
            // Keep draining the log so the server never blocks on it.
            std::thread::spawn(move || for _ in log.lines() {});
            return Ok((child, addr));
        }
    }
}

/// Joins `learner` to class `code`.
pub(crate) async fn join(addr: &str, code: &str, learner: &str) -> anyhow::Result<()> {
    let body = format!(r#"{{"learner":"{learner}","display_name":"{learner}"}}"#);
    let path = format!("/api/classes/{code}/join");
    let (status, text) = call(addr, "POST", &path, Some((&body, false))).await?;
    if status != 200 {
        bail!("join answered {status}: {text}");
    }
    Ok(())
}
