//! Driving one container from created to ready: attach to its output, start
//! it, turn its log lines into phases, probe readiness, and explain an exit.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use stacklab_api::{ErrorCode, FactKey, Phase, RunError};

use super::image::PresentImage;
use super::measure::Cgroup;
use super::readiness::probe_ready;
use super::{attach_and_start, engine_facts, DockerRuntime, NETWORK};
use crate::backends::{MemoryProbe, Ready, RunContext};

/// Last console lines quoted when a container dies.
const TAIL_LINES: usize = 8;

impl DockerRuntime {
    /// Everything between "created" and "ready", plus the measurements.
    pub(super) async fn drive(
        &self,
        ctx: &RunContext,
        id: &str,
        image: &PresentImage,
        xray: Option<super::xray::Pending>,
    ) -> Result<Ready, RunError> {
        let docker = &self.docker;
        let started = attach_and_start(docker, ctx, id, false).await?;
        let (pid, started_us) = (started.pid(), started.started_us);
        let (info, mut output, mut exited) = (started.info, started.output, started.exited);
        let ip: Option<IpAddr> = info
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(NETWORK))
            .and_then(|n| n.ip_address.as_deref())
            .and_then(|ip| ip.parse().ok());
        let cgroup = Cgroup::of_pid(pid).map_err(|e| e.to_string());
        let cgroup_how =
            "the container's memory cgroup: memory.usage_in_bytes (v1) or memory.current (v2)";
        let memory_now = || {
            cgroup
                .as_ref()
                .ok()
                .and_then(|c| c.memory().ok())
                .map(|m| (m.usage, cgroup_how))
        };
        ctx.phase_at(
            started_us,
            Phase::ContainerStarted,
            format!(
                "the engine started the entrypoint (the moment its start call returned); on the host it is the ordinary process {pid}"
            ),
            memory_now(),
        );
        let password = self.spec.password.clone().unwrap_or_default();
        // The probe polls, and is also woken the moment the log says the
        // real server listens, so readiness is seen with the least delay.
        let kick = tokio::sync::Notify::new();
        // No address means the container already exited (e.g. the entrypoint
        // refused to start): then only the exit branch below can fire.
        let probe = async {
            match ip {
                Some(ip) => (ip, probe_ready(ip, password.clone(), &kick).await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(probe);

        let mut pending = String::new();
        let mut tail: Vec<String> = Vec::new();
        let mut first_byte = false;
        let mut ready_lines = 0;
        let mut output_open = true;
        let mut exit_code: Option<i64> = None;
        let (ip, attempts) = loop {
            tokio::select! {
                chunk = output.next(), if output_open => match chunk {
                    Some(Ok(chunk)) => {
                        if !first_byte {
                            first_byte = true;
                            ctx.phase_with_memory(Phase::FirstLogByte, "the container wrote its first byte of output", memory_now());
                        }
                        pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                        while let Some(nl) = pending.find('\n') {
                            let line: String = pending.drain(..=nl).collect();
                            let line = line.trim_end();
                            ctx.log(line);
                            tail.push(line.to_owned());
                            if tail.len() > TAIL_LINES {
                                tail.remove(0);
                            }
                            if line.contains("listening on IPv4") || line.contains("ready to accept connections") {
                                kick.notify_one();
                            }
                            if line.contains("database system is ready to accept connections") {
                                ready_lines += 1;
                                let (phase, detail) = if ready_lines == 1 {
                                    (Phase::TempServerReady, "PostgreSQL logged \"ready to accept connections\" for the first time: the entrypoint's temporary server, listening only on a Unix socket while it finishes the setup")
                                } else {
                                    (Phase::ServerReady, "PostgreSQL logged \"ready to accept connections\" again: the real server, now listening on the network")
                                };
                                ctx.phase_with_memory(phase, detail, memory_now());
                            } else if line.contains("PostgreSQL init process complete") {
                                ctx.phase_with_memory(Phase::InitComplete, "initdb finished and the temporary server stopped", memory_now());
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!("attach stream error: {e}");
                        output_open = false;
                    }
                    None => output_open = false,
                },
                done = &mut probe => break done,
                status = exited.next(), if exit_code.is_none() => {
                    exit_code = Some(match status {
                        Some(Ok(r)) => r.status_code,
                        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                        _ => -1,
                    });
                    // Drain what is left of the output, briefly, for the error message.
                    let drain = async {
                        while let Some(Ok(chunk)) = output.next().await {
                            pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
                    for line in pending.lines() {
                        ctx.log(line);
                        tail.push(line.to_owned());
                    }
                    return Err(self.exit_error(id, exit_code.unwrap_or(-1), &tail).await);
                }
            }
        };
        ctx.phase_with_memory(
            Phase::Ready,
            format!("SELECT 1 answered: the server's first successful `SELECT 1` over the PostgreSQL wire protocol to {ip}:5432 (the probe connected {attempts} time(s), failed attempts included)"),
            memory_now(),
        );
        let mut ready = ctx
            .read_memory(MemoryProbe::Container { cgroup, pid })
            .await;
        if let Some(xray) = xray {
            let subject = super::xray::Subject {
                pid,
                memory_bytes: self.spec.memory_bytes,
                pids_limit: self.spec.pids_limit,
                nano_cpus: self.spec.nano_cpus,
            };
            xray.finish(ctx, subject, started_us).await;
        }
        self.describe(&mut ready, id, image, ip, &password).await;
        ready.fact(
            FactKey::Limits,
            "Its limits",
            self.spec.limits_text(),
            "the container's specification, fixed in the server's code (the same request every run sends)",
        );
        engine_facts(&self.docker, &mut ready).await;
        Ok(ready)
    }

    async fn exit_error(&self, id: &str, code: i64, tail: &[String]) -> RunError {
        let oom = self
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        if oom {
            return RunError {
                code: ErrorCode::OomKilled,
                message: format!(
                    "the kernel's out-of-memory killer stopped the container: it needed more than its memory limit of {} MiB",
                    self.spec.memory_bytes >> 20
                ),
            };
        }
        let tail = tail
            .iter()
            .filter(|l| !l.trim().is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        RunError {
            code: ErrorCode::Exited,
            message: format!("the container exited with code {code} before PostgreSQL was ready. Its last output:\n{tail}"),
        }
    }
}
