//! A Docker engine of the bench's own: `dockerd` with its own socket, data
//! root, exec root (and so its own containerd), pid file, containerd
//! namespace and empty config file, under one temporary directory, in a
//! network namespace of its own. The soak restarts *this* engine, never
//! the host's: the host's daemon, its flags, its network and its
//! containers are not touched.
//!
//! Why its own network namespace: a dockerd changes host-wide interfaces.
//! Started with `--bridge none` it deletes `docker0`, the host engine's
//! default bridge; restarted with a bridge of its own it deleted `docker0`
//! too (seen here: the host's next `docker run` failed with "could not
//! find bridge docker0"). In a namespace of its own its bridges are its
//! own, and they vanish with the namespace. [`in_own_network`] puts the
//! whole soak there (the server must reach the demo containers' addresses,
//! and the soak's clients the server's loopback port).
//!
//! Imports nothing of the server; it drives `dockerd`, `unshare`, `ip` and
//! the `docker` CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Images the demos need, copied from the host's engine.
pub const DEMO_IMAGES: [&str; 2] = ["stacklab/postgres:15-offline", "stacklab/hello:1"];

/// A running private `dockerd`; stopped and its directory removed on drop.
pub struct PrivateEngine {
    dir: PathBuf,
    child: Option<Child>,
}

/// Set in the environment of a soak running in its own network namespace.
const IN_OWN_NETWORK: &str = "STACKLAB_SOAK_OWN_NETWORK";

/// Whether this process is already in the soak's own network namespace;
/// if not, runs `args` of this program again in a new one (`unshare
/// --net`, loopback up) and returns its exit status.
pub fn in_own_network(args: &[String]) -> anyhow::Result<Option<std::process::ExitStatus>> {
    if std::env::var_os(IN_OWN_NETWORK).is_some() {
        ip(&["link", "set", "lo", "up"])?;
        return Ok(None);
    }
    let exe = std::env::current_exe().context("cannot find this program")?;
    let status = Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .args(args)
        .env(IN_OWN_NETWORK, "1")
        .status()
        .context("cannot run unshare (util-linux) for a network namespace")?;
    Ok(Some(status))
}

impl PrivateEngine {
    /// Starts one under a new directory in `/var/tmp` (the data root must
    /// be on a file system overlayfs can sit on, and socket paths short).
    pub fn start() -> anyhow::Result<PrivateEngine> {
        let dir = PathBuf::from(format!("/var/tmp/stacklab-soak-{}", std::process::id()));
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("daemon.json"), "{}")?;
        let mut engine = PrivateEngine { dir, child: None };
        engine.launch()?;
        Ok(engine)
    }

    /// `unix://…`: for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// `docker` on this engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.host());
        c
    }

    /// Its daemon's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let d = |name: &str| self.dir.join(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d("dockerd.log"))?;
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(d("data"))
            .arg("--exec-root")
            .arg(d("exec"))
            .arg("--pidfile")
            .arg(d("docker.pid"))
            .arg("--config-file")
            .arg(d("daemon.json"))
            .args([
                "--containerd-namespace",
                "stacklab-soak",
                "--containerd-plugins-namespace",
                "stacklab-soak-plugins",
                // Its namespace's firewall and forwarding are its own, but
                // nothing here needs them.
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start dockerd (is it installed?)")?;
        self.child = Some(child);
        self.wait_answering(Duration::from_secs(60))
    }

    fn wait_answering(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "the private dockerd exited ({status}); its log: {}",
                    self.log_tail()
                );
            }
            let up = self
                .docker()
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the private dockerd did not answer within {within:?}; its log: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Copies `images` from the host's engine into this one
    /// (`docker save | docker load`).
    pub fn load_from_host(&self, images: &[&str]) -> anyhow::Result<()> {
        let mut save = Command::new("docker")
            .arg("save")
            .args(images)
            .env_remove("DOCKER_HOST")
            .stdout(Stdio::piped())
            .spawn()
            .context("docker save")?;
        let out = self
            .docker()
            .arg("load")
            .stdin(save.stdout.take().context("piped")?)
            .output()?;
        let saved = save.wait()?;
        if !saved.success() || !out.status.success() {
            bail!(
                "could not copy {images:?} into the private engine: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// SIGTERM (as a service manager stops it), wait for it to exit.
    fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the private dockerd did not stop within 30 s of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the daemon and starts it again with the same flags; how long
    /// it was away.
    pub fn restart(&mut self) -> anyhow::Result<Duration> {
        let stopped = Instant::now();
        self.terminate()?;
        self.launch()?;
        Ok(stopped.elapsed())
    }

    /// The directory everything lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `ip args`.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("{e}");
        }
        // Whatever the daemon left mounted under its roots, then the files.
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.join("exec"))
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.join("data"))
            .stderr(Stdio::null())
            .status();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "could not remove the private engine's {}: {e}",
                self.dir.display()
            );
        }
    }
}
