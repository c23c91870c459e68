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
//! `--jail UID:GID` (the server always gives it) first moves the process
//! into its jail (see `stacklab_vmm::jail`): own namespaces, an empty
//! root, that user and group, a seccomp filter. The guest's files are read
//! before. `--jail-selftest probe[=HOST:PORT]|socket|execve` is for the
//! jail's tests: `probe` prints what the inside looks like (before the
//! filter); the others try a forbidden call after it, which must end the
//! process with a `syscall_forbidden` error.
//!
//! The first boots stacklab's tiny guest (an ELF with a PVH note); the
//! second a Linux kernel with an initramfs. With `--hold` the tiny guest
//! waits at ready until a line arrives on standard input (the server
//! measures the VM meanwhile). A bad flag or value is refused
//! with a `usage` error, never replaced by a default.

use std::io::Write;
use std::time::Duration;

use stacklab_api::ErrorCode;
use stacklab_vmm::jail::{self, JailIds};
use stacklab_vmm::protocol::Line;
use stacklab_vmm::report::{monotonic_ns, VmEvent, VmReport};
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

/// A jail self-test: what to try once inside.
enum SelfTest {
    Probe(Option<String>),
    Socket,
    Execve,
}

impl std::str::FromStr for SelfTest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            None if s == "probe" => Ok(SelfTest::Probe(None)),
            Some(("probe", addr)) => Ok(SelfTest::Probe(Some(addr.to_owned()))),
            None if s == "socket" => Ok(SelfTest::Socket),
            None if s == "execve" => Ok(SelfTest::Execve),
            _ => Err(format!(
                "--jail-selftest wants probe[=HOST:PORT], socket or execve, got {s:?}"
            )),
        }
    }
}

/// The command line: what to boot, and in what jail.
struct Args {
    boot: Boot,
    jail: Option<JailIds>,
    selftest: Option<SelfTest>,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let (mut image, mut kernel, mut initrd) = (None, None, None);
    let mut tiny = VmConfig::default();
    let mut linux = LinuxConfig::default();
    let (mut jail, mut selftest, mut floor) = (None, None, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("jail") => jail = Some(parser.value()?.parse()?),
            Long("jail-selftest") => selftest = Some(parser.value()?.parse()?),
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
            Long("mode") => {
                tiny.mode = parser.value()?.parse()?;
                if !stacklab_abi::mode::is_known(tiny.mode) {
                    return Err(format!("--mode {:#x}: an unknown mode or flag", tiny.mode).into());
                }
            }
            Long("hold") => tiny.hold = true,
            Long("floor") => floor = true,
            _ => return Err(arg.unexpected()),
        }
    }
    let boot = match (floor, image, kernel, initrd) {
        (true, None, None, None) if jail.is_none() => Boot::Floor,
        (true, ..) => return Err("--floor runs alone: the bare sequence, unjailed".into()),
        (false, Some(image), None, None) => Boot::Tiny {
            image,
            config: tiny,
        },
        (false, None, Some(kernel), Some(initrd)) => Boot::Linux {
            kernel,
            initrd,
            config: linux,
        },
        _ => return Err("give either --image PATH, or --kernel PATH and --initrd PATH".into()),
    };
    if selftest.is_some() && jail.is_none() {
        return Err("--jail-selftest needs --jail UID:GID".into());
    }
    Ok(Args {
        boot,
        jail,
        selftest,
    })
}

/// Guest files, read before the jail hides every path.
enum Loaded {
    Floor,
    Tiny(Vec<u8>, VmConfig),
    Linux(Vec<u8>, Vec<u8>, LinuxConfig),
}

/// Enters the jail, runs a self-test if asked (which does not return),
/// and reports the jail as the run's first step.
fn enter_jail(ids: JailIds, selftest: Option<SelfTest>) {
    let started = monotonic_ns();
    let inside = jail::enter(ids).unwrap_or_else(|e| fail(ErrorCode::Jail, e.to_string(), 1));
    if let Some(SelfTest::Probe(addr)) = &selftest {
        println!("{}", jail::probe(addr.as_deref()));
        std::process::exit(0);
    }
    let jailed = inside
        .lock_down()
        .unwrap_or_else(|e| fail(ErrorCode::Jail, e.to_string(), 1));
    match selftest {
        // SAFETY: plain system calls the filter must stop; if it does not,
        // their results are dropped and the test is told.
        Some(SelfTest::Socket) => unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            fail(ErrorCode::Jail, "socket() was not stopped".into(), 3)
        },
        // SAFETY: as above; argv and envp are null-terminated empty lists.
        Some(SelfTest::Execve) => unsafe {
            let argv = [std::ptr::null::<libc::c_char>()];
            libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), argv.as_ptr());
            fail(ErrorCode::Jail, "execve() was not stopped".into(), 3)
        },
        _ => {}
    }
    let at = monotonic_ns();
    emit(&Line::Event(VmEvent {
        phase: stacklab_api::Phase::Jailed,
        detail: format!(
            "{}; entering it took {} µs",
            jailed.detail(),
            (at - started) / 1000
        ),
        mono_ns: at,
        guest_us: None,
    }));
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| fail(ErrorCode::Usage, e.to_string(), 2));
    let loaded = match args.boot {
        Boot::Floor => Loaded::Floor,
        Boot::Tiny { image, config } => Loaded::Tiny(read(&image), config),
        Boot::Linux {
            kernel,
            initrd,
            config,
        } => Loaded::Linux(read(&kernel), read(&initrd), config),
    };
    if let Some(ids) = args.jail {
        enter_jail(ids, args.selftest);
    }
    let on_event = &mut |e: &VmEvent| emit(&Line::Event(e.clone()));
    let result = match loaded {
        Loaded::Floor => match stacklab_vmm::floor::run_floor(16 << 20) {
            // One line: the Floor itself (not a protocol Line).
            Ok(floor) => return println!("{}", serde_json::to_string(&floor).unwrap_or_default()),
            Err(e) => fail(e.code(), e.to_string(), 1),
        },
        Loaded::Tiny(image, config) => match run(&image, &config, on_event) {
            Ok(finished) => {
                done(&finished.report, None);
                // The result is out; the teardown is nobody's wait now.
                return finished.tear_down();
            }
            Err(e) => Err(e),
        },
        Loaded::Linux(kernel, initrd, config) => {
            run_linux(&kernel, &initrd, &config, on_event).map(|(r, g)| (r, Some(g)))
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
        report: Box::new(report.clone()),
        guest,
    })
}
