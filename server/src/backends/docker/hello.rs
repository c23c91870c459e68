//! `hello-container`: the smallest program in a container, the micro-VM's
//! fair counterpart (platform against platform). Its image holds one file,
//! a 192-byte static x86-64 program written here byte by byte: it prints a
//! line, then waits for one byte on standard input, then exits. So the
//! container is measured while it runs, like the VM at ready, and its exit
//! is observed when the server lets it go.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use stacklab_api::{ErrorCode, FactKey, Metric, Phase, RunError};
use tokio::io::AsyncWriteExt;

use super::image::ImageError;
use super::measure::Cgroup;
use super::spec::{caps_text, DEMO_MEMORY_BYTES, DEMO_NANO_CPUS, DEMO_PIDS};
use super::{attach_and_start, docker_error, drive_then_remove, engine_facts, Owner};
use crate::backends::{MemoryProbe, Ready, RunContext, Runtime};

/// The image's reference.
pub const HELLO_IMAGE: &str = "stacklab/hello:1";
/// What the program prints.
pub const GREETING: &str = "hello from a container";

/// Where the program is loaded (the classic static-executable base).
const BASE: u64 = 0x40_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

/// The program: a static ELF64 executable with one loadable segment.
/// `write(1, GREETING "\n")`, `read(0, sp-8, 1)`, `exit(0)`; no libc, no
/// loader, nothing else in the image.
pub fn program() -> Vec<u8> {
    let message = format!("{GREETING}\n");
    #[rustfmt::skip]
    let mut code: Vec<u8> = vec![
        0xb8, 1, 0, 0, 0,                   // mov eax, 1      (write)
        0xbf, 1, 0, 0, 0,                   // mov edi, 1      (stdout)
        0x48, 0x8d, 0x35, 0, 0, 0, 0,       // lea rsi, [rip + message]
        0xba, 0, 0, 0, 0,                   // mov edx, len
        0x0f, 0x05,                         // syscall
        0x31, 0xc0,                         // xor eax, eax    (read)
        0x31, 0xff,                         // xor edi, edi    (stdin)
        0x48, 0x8d, 0x74, 0x24, 0xf8,       // lea rsi, [rsp - 8]
        0xba, 1, 0, 0, 0,                   // mov edx, 1
        0x0f, 0x05,                         // syscall
        0xb8, 60, 0, 0, 0,                  // mov eax, 60     (exit)
        0x31, 0xff,                         // xor edi, edi
        0x0f, 0x05,                         // syscall
    ];
    // rip-relative: from the end of the lea (offset 17) to the message.
    let disp = (code.len() - 17) as u32;
    code[13..17].copy_from_slice(&disp.to_le_bytes());
    code[18..22].copy_from_slice(&(message.len() as u32).to_le_bytes());
    let size = (EHDR + PHDR + code.len() + message.len()) as u64;
    let entry = BASE + (EHDR + PHDR) as u64;

    let mut elf = Vec::with_capacity(size as usize);
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]); // ELF64, LE, v1, SysV
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // version
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // one program header
    elf.extend_from_slice(&[0; 6]); // no sections
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R + X
    elf.extend_from_slice(&0u64.to_le_bytes()); // from file offset 0
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&size.to_le_bytes());
    elf.extend_from_slice(&size.to_le_bytes());
    elf.extend_from_slice(&0x1000u64.to_le_bytes());
    elf.extend_from_slice(&code);
    elf.extend_from_slice(message.as_bytes());
    elf
}

/// The image's size, if it is present.
pub async fn find(docker: &Docker) -> Result<u64, ImageError> {
    match docker.inspect_image(HELLO_IMAGE).await {
        Ok(image) => Ok(image.size.unwrap_or_default().max(0) as u64),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(ImageError::HelloMissing),
        Err(e) => Err(e.into()),
    }
}

/// Builds the image `FROM scratch` with the program as its one file (no
/// registry needed; well under a second).
pub async fn build(docker: &Docker) -> Result<u64, ImageError> {
    let dockerfile = "FROM scratch\nCOPY hello /hello\nUSER 65534:65534\nLABEL stacklab.image=hello\nENTRYPOINT [\"/hello\"]\n";
    let mut tar = tar::Builder::new(Vec::new());
    for (name, mode, bytes) in [
        ("Dockerfile", 0o644, dockerfile.as_bytes().to_vec()),
        ("hello", 0o755, program()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .map_err(|source| ImageError::Io {
                what: "packing the hello image".into(),
                source,
            })?;
    }
    let context = tar.into_inner().map_err(|source| ImageError::Io {
        what: "packing the hello image".into(),
        source,
    })?;
    let options = BuildImageOptionsBuilder::default()
        .t(HELLO_IMAGE)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(info) = stream.next().await {
        if let Some(err) = info?.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Tool(format!("hello image build failed: {err}")));
        }
    }
    find(docker).await
}

/// The hello container's caps: the same as every demo container's.
#[derive(Debug, Clone)]
pub struct HelloSpec {
    /// Hard memory limit.
    pub memory_bytes: u64,
    /// Maximum number of processes.
    pub pids_limit: i64,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: i64,
}

impl Default for HelloSpec {
    fn default() -> Self {
        HelloSpec {
            memory_bytes: DEMO_MEMORY_BYTES,
            pids_limit: DEMO_PIDS,
            nano_cpus: DEMO_NANO_CPUS,
        }
    }
}

/// Runs the hello container on a Docker engine.
pub struct HelloRuntime {
    docker: Docker,
    spec: HelloSpec,
    owner: Owner,
}

impl HelloRuntime {
    /// A runtime whose containers carry `owner`'s labels.
    pub fn new(docker: Docker, owner: Owner) -> Self {
        HelloRuntime {
            docker,
            spec: HelloSpec::default(),
            owner,
        }
    }

    /// The engine's client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn body(&self, run_id: &str) -> ContainerCreateBody {
        let mut labels: HashMap<String, String> = self.owner.labels();
        labels.insert("stacklab.run".into(), run_id.to_owned());
        ContainerCreateBody {
            image: Some(HELLO_IMAGE.into()),
            labels: Some(labels),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            host_config: Some(HostConfig {
                memory: Some(self.spec.memory_bytes as i64),
                memory_swap: Some(self.spec.memory_bytes as i64),
                pids_limit: Some(self.spec.pids_limit),
                nano_cpus: Some(self.spec.nano_cpus),
                network_mode: Some("none".into()),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn drive(
        &self,
        ctx: &RunContext,
        id: &str,
        xray: Option<super::xray::Pending>,
    ) -> Result<Ready, RunError> {
        let docker = &self.docker;
        let started = attach_and_start(docker, ctx, id, true).await?;
        let (pid, started_us) = (started.pid(), started.started_us);
        let (mut output, mut input, mut exited) = (started.output, started.input, started.exited);
        ctx.phase_at(
            started_us,
            Phase::ContainerStarted,
            format!("the engine started /hello (the moment its start call returned); on the host it is the ordinary process {pid}"),
            None,
        );
        let cgroup = Cgroup::of_pid(pid).map_err(|e| e.to_string());
        let mut printed = String::new();
        while !printed.contains('\n') {
            match output.next().await {
                Some(Ok(chunk)) => printed.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
                Some(Err(e)) => return Err(docker_error(e)),
                None => {
                    return Err(RunError {
                        code: ErrorCode::Exited,
                        message: format!(
                            "the program ended its output before its line (it printed {printed:?})"
                        ),
                    })
                }
            }
        }
        let line = printed.trim_end().to_owned();
        ctx.phase(
            Phase::Ready,
            format!("the program ran: the container's program printed {line:?}; it is running"),
        );
        ctx.log(&line);
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
        // Let it go: one byte on its standard input, and it exits.
        let _ = input.write_all(b"\n").await;
        let _ = input.flush().await;
        let code = match tokio::time::timeout(Duration::from_secs(5), exited.next()).await {
            Ok(Some(Ok(r))) => Some(r.status_code),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Some(code)
            }
            _ => None,
        };
        match code {
            Some(code) => ctx.phase(
                Phase::Exited,
                format!("given a byte on its standard input, the program exited with code {code}"),
            ),
            None => ready.fact(
                FactKey::Output,
                "Exit",
                "the program did not exit within 5 s of its byte; it was removed".into(),
                "waited 5 s on the engine's wait stream after writing its byte",
            ),
        }
        ready.fact(
            FactKey::Output,
            "What it printed",
            line,
            "the container's standard output, through the engine's attach stream",
        );
        ready.fact(
            FactKey::Image,
            "Image",
            format!(
                "{HELLO_IMAGE}: one static {} byte program, FROM scratch, built by stacklab",
                program().len()
            ),
            "the image the container was created from",
        );
        ready.fact(
            FactKey::Limits,
            "Its limits",
            format!(
                "{}, no network",
                caps_text(
                    self.spec.memory_bytes,
                    self.spec.pids_limit,
                    self.spec.nano_cpus
                )
            ),
            "the container's specification, fixed in the server's code",
        );
        engine_facts(&self.docker, &mut ready).await;
        ready.read(Metric::ImageSize, Ok(program().len() as f64));
        Ok(ready)
    }
}

impl Runtime for HelloRuntime {
    async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
        find(&self.docker).await.map_err(ImageError::run_error)?;
        let xray = super::xray::begin(ctx);
        ctx.phase(
            Phase::ImageReady,
            format!("{HELLO_IMAGE}: already present; the create request follows at once"),
        );
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().build()),
                self.body(ctx.run_id()),
            )
            .await
            .map_err(docker_error)?;
        let drive = self.drive(ctx, &created.id, xray);
        drive_then_remove(&self.docker, ctx, &created.id, drive).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// The hand-written program runs on this host: it prints its line,
    /// waits for standard input, and exits 0 when it closes.
    #[test]
    fn the_program_prints_waits_and_exits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hello");
        std::fs::write(&path, program()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{:?}", out.status);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{GREETING}\n")
        );
        assert!(program().len() < 256, "{} bytes", program().len());
    }
}
