//! Debian's nginx in front of servers a test started, and the processes
//! a test starts, stopped when it ends (`replicas.rs`, `edges.rs`).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Debian's nginx (`./dev install` installs it).
pub const NGINX: &str = "/usr/sbin/nginx";

/// Whether nginx is here; on a CI machine it must be.
pub fn present() -> bool {
    if Path::new(NGINX).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{NGINX} is missing (./dev installs nginx)"
    );
    eprintln!("skipped: {NGINX} is missing (./dev installs nginx)");
    false
}

/// The processes a test started, by name: stopped (and waited for) when
/// the test ends, also when it fails.
#[derive(Default)]
pub struct Processes(Vec<(String, Child)>);

impl Processes {
    pub fn add(&mut self, name: &str, child: Child) {
        self.0.push((name.to_owned(), child));
    }

    /// SIGKILLs `name` now: a host that dies without a word.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.0.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops `name` the way an operator would: SIGTERM, so a replica
    /// cleans up its runs and nginx's master takes its workers with it
    /// (a SIGKILLed master leaves them running); SIGKILL after 10 s.
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|(n, _)| n == name) {
            let (_, child) = self.0.remove(i);
            terminate(child);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in self.0.drain(..) {
            terminate(child);
        }
    }
}

fn terminate(mut child: Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    // SAFETY: kill(2) on the pid of a child we have not yet waited for,
    // so the pid cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..100 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// nginx in front of `upstreams`, round robin, streaming (no buffering).
#[allow(clippy::zombie_processes)] // the caller's `Processes` waits for it
pub fn start_nginx(dir: &Path, upstreams: &[&str]) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let servers: String = upstreams.iter().map(|u| format!("server {u};")).collect();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream lab {{ {servers} }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://lab;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"
        ),
    )
    .unwrap();
    let child = Command::new(NGINX)
        .args(["-p"])
        .arg(dir)
        .args(["-c"])
        .arg(dir.join("nginx.conf"))
        .args(["-e"])
        .arg(dir.join("error.log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if TcpStream::connect(&addr).is_ok() {
            return (child, addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nginx did not listen on {addr}");
}
