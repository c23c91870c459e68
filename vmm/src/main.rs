//! `stacklab-vmm`: one micro-VM run in its own process.
//!
//! The server starts one of these per VM (so a misbehaving guest or a VMM
//! bug can never take the server down, and the kernel reclaims everything
//! when it exits). It prints one JSON object per line on stdout: each step
//! as `{"event": …}`, then `{"done": …}` or `{"error": …}`.
//!
//! Usage:
//!   stacklab-vmm --image PATH [--mem-mib N] [--deadline-ms N] [--mode N] [--hold]
//!   stacklab-vmm --kernel BZIMAGE --initrd CPIO [--mem-mib N] [--deadline-ms N] [--cmdline S]
//!   stacklab-vmm --floor   (the bare KVM sequence, for the bench)
//!
//! The first boots stacklab's tiny guest (an ELF with a PVH note); the
//! second a Linux kernel with an initramfs. With `--hold` the tiny guest
//! waits at ready until a line arrives on standard input (the server
//! measures the VM meanwhile). A bad flag or value is refused
//! with a `usage` error, never replaced by a default.

use std::io::Write;
use std::time::Duration;

use stacklab_api::ErrorCode;
use stacklab_vmm::protocol::Line;
use stacklab_vmm::report::{VmEvent, VmReport};
use stacklab_vmm::{run, run_linux, GuestView, LinuxConfig, VmConfig};

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn fail(code: ErrorCode, message: String, status: i32) -> ! {
    emit(&Line::Error { code, message });
    std::process::exit(status);
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path)
        .unwrap_or_else(|e| fail(ErrorCode::Load, format!("cannot read {path}: {e}"), 1))
}

/// What to boot, from the command line.
enum Boot {
    Floor,
    Tiny {
        image: String,
        config: VmConfig,
    },
    Linux {
        kernel: String,
        initrd: String,
        config: LinuxConfig,
    },
}

fn parse_args() -> Result<Boot, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let (mut image, mut kernel, mut initrd) = (None, None, None);
    let mut tiny = VmConfig::default();
    let mut linux = LinuxConfig::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("image") => image = Some(parser.value()?.string()?),
            Long("kernel") => kernel = Some(parser.value()?.string()?),
            Long("initrd") => initrd = Some(parser.value()?.string()?),
            Long("cmdline") => linux.cmdline = parser.value()?.string()?,
            Long("mem-mib") => {
                let mib: usize = parser.value()?.parse()?;
                tiny.mem_bytes = mib << 20;
                linux.mem_bytes = mib << 20;
            }
            Long("deadline-ms") => {
                let ms: u64 = parser.value()?.parse()?;
                tiny.deadline = Duration::from_millis(ms);
                linux.deadline = tiny.deadline;
            }
            Long("mode") => tiny.mode = parser.value()?.parse()?,
            Long("hold") => tiny.hold = true,
            Long("floor") => return Ok(Boot::Floor),
            _ => return Err(arg.unexpected()),
        }
    }
    match (image, kernel, initrd) {
        (Some(image), None, None) => Ok(Boot::Tiny {
            image,
            config: tiny,
        }),
        (None, Some(kernel), Some(initrd)) => Ok(Boot::Linux {
            kernel,
            initrd,
            config: linux,
        }),
        _ => Err("give either --image PATH, or --kernel PATH and --initrd PATH".into()),
    }
}

fn main() {
    let boot = parse_args().unwrap_or_else(|e| fail(ErrorCode::Usage, e.to_string(), 2));
    let on_event = &mut |e: &VmEvent| emit(&Line::Event(e.clone()));
    let result = match boot {
        Boot::Floor => match stacklab_vmm::floor::run_floor(16 << 20) {
            // One line: the Floor itself (not a protocol Line).
            Ok(floor) => return println!("{}", serde_json::to_string(&floor).unwrap_or_default()),
            Err(e) => fail(e.code(), e.to_string(), 1),
        },
        Boot::Tiny { image, config } => match run(&read(&image), &config, on_event) {
            Ok(finished) => {
                done(&finished.report, None);
                // The result is out; the teardown is nobody's wait now.
                return finished.tear_down();
            }
            Err(e) => Err(e),
        },
        Boot::Linux {
            kernel,
            initrd,
            config,
        } => {
            run_linux(&read(&kernel), &read(&initrd), &config, on_event).map(|(r, g)| (r, Some(g)))
        }
    };
    match result {
        Ok((report, guest)) => done(&report, guest),
        Err(e) => fail(e.code(), e.to_string(), 1),
    }
}

/// The last line of a run that reached its end.
fn done(report: &VmReport, guest: Option<GuestView>) {
    emit(&Line::Done {
        vmm_rss_bytes: report.vmm_rss_bytes,
        vmm_pss_bytes: report.vmm_pss_bytes,
        report: report.clone(),
        guest,
    })
}
