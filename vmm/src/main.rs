//! `stacklab-vmm`: one micro-VM run in its own process.
//!
//! The server starts one of these per VM (so a misbehaving guest or a VMM
//! bug can never take the server down, and the kernel reclaims everything
//! when it exits). It prints one JSON object per line on stdout: each step
//! as `{"event": …}`, then `{"done": …}` or `{"error": …}`.
//!
//! Usage:
//!   stacklab-vmm --image PATH [--mem-mib N] [--deadline-ms N] [--mode N]
//!   stacklab-vmm --kernel BZIMAGE --initrd CPIO [--mem-mib N] [--deadline-ms N] [--cmdline S]
//!
//! The first boots stacklab's tiny guest (an ELF with a PVH note); the
//! second a Linux kernel with an initramfs.

use std::io::Write;
use std::time::Duration;

use stacklab_vmm::linux::{self, LinuxConfig};
use stacklab_vmm::protocol::Line;
use stacklab_vmm::vm::{self, VmConfig};

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn fail(code: &str, message: String, status: i32) -> ! {
    emit(&Line::Error {
        code: code.into(),
        message,
    });
    std::process::exit(status);
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| fail("load", format!("cannot read {path}: {e}"), 1))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut image = None;
    let mut kernel = None;
    let mut initrd = None;
    let mut config = VmConfig::default();
    let mut linux_config = LinuxConfig::default();
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let number = || value.parse::<u64>().ok();
        match flag.as_str() {
            "--image" => image = Some(value),
            "--kernel" => kernel = Some(value),
            "--initrd" => initrd = Some(value),
            "--cmdline" => linux_config.cmdline = value,
            "--mem-mib" => {
                config.mem_bytes = number().unwrap_or(0) as usize * (1 << 20);
                linux_config.mem_bytes = config.mem_bytes;
            }
            "--deadline-ms" => {
                config.deadline = Duration::from_millis(number().unwrap_or(0));
                linux_config.deadline = config.deadline;
            }
            "--mode" => config.mode = number().unwrap_or(u64::MAX) as u32,
            _ => fail("usage", format!("unknown flag {flag:?}"), 2),
        }
    }
    let on_event = &mut |e: &vm::VmEvent| emit(&Line::Event(e.clone()));
    let result = match (image, kernel, initrd) {
        (Some(path), None, None) => vm::run(&read(&path), &config, on_event).map(|r| (r, None)),
        (None, Some(kernel), Some(initrd)) => {
            linux::run_linux(&read(&kernel), &read(&initrd), &linux_config, on_event)
                .map(|(r, g)| (r, Some(g)))
        }
        _ => fail(
            "usage",
            "give either --image PATH, or --kernel PATH and --initrd PATH".into(),
            2,
        ),
    };
    match result {
        Ok((report, guest)) => {
            emit(&Line::Done {
                vmm_rss_bytes: report.vmm_rss_bytes,
                vmm_pss_bytes: report.vmm_pss_bytes,
                report,
                guest,
            });
        }
        Err(e) => fail(e.code(), e.to_string(), 1),
    }
}
