//! A micro-VM's x-ray: what the tiny guest reports of its machine (its
//! kernel, CPUID vendor and hypervisor signature, privilege level, memory)
//! beside what the host sees: the VMM's processes and jail (read while the
//! VM is held at ready), the KVM calls it made with their times, the exits
//! that reached it, and KVM's own events inside the kernel (tracefs),
//! filtered to the VMM's threads.

use std::collections::{BTreeMap, HashSet};

use stacklab_api::{XRay, XRayCall, XRayKey, XRayOf};
use stacklab_vmm::report::VmReport;

use crate::backends::tracefs::{Capture, EventSet, TraceEvent};
use crate::backends::xray::{cap_names, field, ns_inode, seccomp_text, status, NAMESPACES};

/// Starts the capture of KVM's events, or notes why there is none.
pub fn start_capture(x: &mut XRay) -> Option<Capture> {
    match Capture::start(EventSet::Kvm) {
        Ok(c) => Some(c),
        Err(e) => {
            for (key, label) in KVM_COUNTS {
                x.push_missing(key, label, e.to_string());
            }
            None
        }
    }
}

/// Notes that no KVM events were captured because the run did not ask.
pub fn not_asked(x: &mut XRay) {
    for (key, label) in KVM_COUNTS {
        x.push_missing(key, label, crate::backends::docker::xray::NOT_ASKED);
    }
}

/// The threads of `pid` (`/proc/PID/task`).
pub fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn user_name(uid: &str) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&uid)).then(|| f[0].to_owned())
            })
        })
        .map_or_else(|| format!("uid {uid}"), |n| format!("{n} (uid {uid})"))
}

/// The VMM's namespaces against the server's, read with `inode` (`who`,
/// namespace → its inode): its own, the shared, and those either side's
/// link could not be read for, which are neither.
fn jail_namespaces(who: &str, inode: &dyn Fn(&str, &str) -> Result<u64, String>) -> String {
    let (mut own, mut shared, mut unread) = (Vec::new(), Vec::new(), Vec::new());
    for ns in NAMESPACES {
        match (inode(who, ns), inode("self", ns)) {
            (Ok(a), Ok(b)) if a == b => shared.push(ns),
            (Ok(_), Ok(_)) => own.push(ns),
            _ => unread.push(ns),
        }
    }
    let list = |l: &[&str]| {
        if l.is_empty() {
            "none".to_owned()
        } else {
            l.join(", ")
        }
    };
    let mut said = format!(
        "its own: {}; shared with the server: {}",
        list(&own),
        list(&shared)
    );
    if !unread.is_empty() {
        said += &format!("; not read: {}", unread.join(", "));
    }
    said
}

/// The host's side, read while the VM is held at ready: the process the
/// server started (`waiter`) and the VMM inside its jail (`vmm`).
pub fn read_held(x: &mut XRay, waiter: u32, vmm: Option<u32>) {
    x.of = Some(XRayOf::Vm);
    let vmm_pid = vmm.unwrap_or(waiter);
    let who = vmm_pid.to_string();
    let st = match status(&who) {
        Ok(s) => s,
        Err(e) => {
            x.push_missing(XRayKey::VmmProcess, "The VMM process", e);
            return;
        }
    };
    let uid = field(&st, "Uid")
        .and_then(|u| u.split_whitespace().nth(1))
        .unwrap_or("not read")
        .to_owned();
    let nspid = field(&st, "NSpid").unwrap_or("").to_owned();
    x.push_row(
        XRayKey::HostProcesses,
        "Host processes it can see",
        Some("none: the guest's world is its RAM, one vCPU and the ports the VMM answers; it has no process list of the host".into()),
        Some(match vmm {
            Some(v) => format!("2 for this VM: {waiter} (the jail's waiter) and {v} (stacklab-vmm)"),
            None => format!("1 for this VM: {waiter} (stacklab-vmm)"),
        }),
        None,
        "the process the server started and its children (/proc/PID/task/PID/children); the guest's kernel and app are not host processes",
    );
    x.push_row(
        XRayKey::VmmProcess,
        "The VMM process",
        None,
        Some(format!(
            "PID {vmm_pid} ({}), running as {}",
            // Said from NSpid's last field, not assumed (the waiter is
            // shown where the jailed VMM was not found).
            match nspid.split_whitespace().collect::<Vec<_>>()[..] {
                [] => "NSpid not read".to_owned(),
                [_] => format!("NSpid {nspid}: in the server's PID namespace"),
                [.., "1"] => format!("NSpid {nspid}: PID 1 in its own PID namespace"),
                [.., inner] => format!("NSpid {nspid}: PID {inner} in its own PID namespace"),
            },
            user_name(&uid)
        )),
        None,
        "NSpid and Uid in /proc/PID/status; the user's name from /etc/passwd",
    );
    x.push_row(
        XRayKey::VmmNamespaces,
        "The VMM's jail: namespaces",
        None,
        Some(jail_namespaces(&who, &ns_inode)),
        None,
        "readlink /proc/PID/ns/* of the VMM against the server's /proc/self/ns/*",
    );
    let f = |n: &str| field(&st, n).unwrap_or("not read").to_owned();
    x.push_row(
        XRayKey::VmmSeccomp,
        "The VMM's jail: seccomp and privileges",
        None,
        Some(format!(
            "Seccomp {}, {} filter(s); NoNewPrivs {}; capabilities: {}",
            seccomp_text(&f("Seccomp")),
            f("Seccomp_filters"),
            f("NoNewPrivs"),
            cap_names(&f("CapEff"))
        )),
        None,
        "Seccomp, Seccomp_filters, NoNewPrivs and CapEff in the VMM's /proc/PID/status",
    );
}

/// The KVM events counted, each with its key and label.
const KVM_COUNTS: [(XRayKey, &str); 8] = [
    (XRayKey::KvmExit, "kvm_exit: the guest left the CPU for KVM"),
    (
        XRayKey::KvmEmulateInsn,
        "kvm_emulate_insn: instructions KVM emulated",
    ),
    (
        XRayKey::KvmPio,
        "kvm_pio: port I/O KVM handled or passed on",
    ),
    (XRayKey::KvmMmio, "kvm_mmio: memory-mapped I/O"),
    (
        XRayKey::KvmUserspaceExit,
        "kvm_userspace_exit: returns to the VMM",
    ),
    (
        XRayKey::KvmPageFault,
        "page faults on guest memory (kvm_page_fault, fast_page_fault)",
    ),
    (
        XRayKey::KvmSpte,
        "kvm_mmu_set_spte: mappings of guest memory to host pages KVM installed on first touch (roughly what the guest touched)",
    ),
    (
        XRayKey::KvmPagetableWalk,
        "kvm_mmu_pagetable_walk: the guest's page tables walked by KVM",
    ),
];

fn count_key(name: &str) -> Option<XRayKey> {
    Some(match name {
        "kvm_exit" => XRayKey::KvmExit,
        "kvm_emulate_insn" => XRayKey::KvmEmulateInsn,
        "kvm_pio" => XRayKey::KvmPio,
        "kvm_mmio" => XRayKey::KvmMmio,
        "kvm_userspace_exit" => XRayKey::KvmUserspaceExit,
        "kvm_page_fault" | "fast_page_fault" => XRayKey::KvmPageFault,
        "kvm_mmu_set_spte" => XRayKey::KvmSpte,
        "kvm_mmu_pagetable_walk" => XRayKey::KvmPagetableWalk,
        _ => return None,
    })
}

/// What a capture read (its events and how many the buffer lost, or why
/// not), and the events this kernel lacks.
pub type Captured = (Result<(Vec<TraceEvent>, u64), String>, Vec<&'static str>);

/// Everything that comes with the VMM's report: the guest's own view
/// (the tiny guest's x-ray line, or a Linux guest's `uname -r` as
/// `linux_release`), the KVM calls with times (`at_us` places a
/// CLOCK_MONOTONIC instant on the run's clock), the exits, and KVM's
/// events of the VMM's `tids` (`events`: the capture's, or why none).
pub fn complete(
    x: &mut XRay,
    report: &VmReport,
    linux_release: Option<&str>,
    at_us: &dyn Fn(u64) -> u64,
    capture: Option<Captured>,
    tids: &HashSet<u32>,
) {
    x.of = Some(XRayOf::Vm);
    guest_view(x, report, linux_release);
    x.calls_title = "KVM calls the VMM made".into();
    x.calls_how = "timed by the VMM itself around each call (CLOCK_MONOTONIC before and after), placed on the run's clock; KVM_RUN is shown once, the first, which lasts until the guest's first exit".into();
    x.calls = report
        .ioctls
        .iter()
        .map(|c| XRayCall {
            at_us: at_us(c.mono_ns),
            took_us: Some(c.took_ns / 1000),
            name: c.name.clone(),
            detail: String::new(),
            by: None,
        })
        .collect();
    if report.ioctls.is_empty() {
        x.push_missing(
            XRayKey::Ioctls,
            "KVM calls",
            "the VMM reported no timed calls (an older VMM binary?)",
        );
    }
    let how = "counted by the VMM at each return from KVM_RUN, by exit reason";
    x.push_count(
        XRayKey::ExitsIo,
        "Exits to the VMM: port I/O",
        report.exit_reasons.io,
        how,
    );
    x.push_count(
        XRayKey::ExitsMmio,
        "Exits to the VMM: MMIO",
        report.exit_reasons.mmio,
        how,
    );
    x.push_count(
        XRayKey::ExitsOther,
        "Exits to the VMM: other reasons",
        report.exit_reasons.other,
        how,
    );
    let Some((events, absent)) = capture else {
        return;
    };
    let (events, lost) = match events {
        Ok(e) => e,
        Err(reason) => {
            for (key, label) in KVM_COUNTS {
                x.push_missing(key, label, reason.clone());
            }
            return;
        }
    };
    // Events are kept by thread: with no thread of the VMM read (the run
    // never reached ready), a count would be 0 by construction.
    if tids.is_empty() {
        for (key, label) in KVM_COUNTS {
            x.push_missing(
                key,
                label,
                "the VMM's threads were not read (the run did not reach ready), so no event could be told to be this VM's",
            );
        }
        return;
    }
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| tids.contains(&e.pid)) {
        *counts.entry(e.name.as_str()).or_default() += 1;
    }
    let mut by_key: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, n) in &counts {
        if let Some(key) = count_key(name) {
            *by_key.entry(key.as_str()).or_default() += n;
        }
    }
    let how = format!(
        "KVM's tracepoints (tracefs), kept for the VMM's threads ({}), from before the VMM started until it exited: the boot, and after ready the guest's x-ray report and its power-off{}",
        tids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if lost > 0 {
            format!("; the trace buffer overwrote {lost} events meanwhile, so counts may be low")
        } else {
            String::new()
        }
    );
    for (key, label) in KVM_COUNTS {
        let events_of_key: Vec<&str> = match key {
            XRayKey::KvmPageFault => vec!["kvm/kvm_page_fault", "kvmmmu/fast_page_fault"],
            _ => EventSet::Kvm
                .events()
                .iter()
                .copied()
                .filter(|e| count_key(e.rsplit('/').next().unwrap_or("")) == Some(key))
                .collect(),
        };
        if events_of_key.iter().all(|e| absent.contains(e)) {
            x.push_missing(key, label, "this kernel has no such tracepoint");
            continue;
        }
        let n = by_key.get(key.as_str()).copied().unwrap_or(0);
        if key == XRayKey::KvmExit && n == 0 && report.exits > 0 {
            x.push_missing(
                key,
                label,
                format!("kvm_exit did not fire although the VMM saw {} exits: this host's KVM (nested, paravirtual kvm-pvm) leaves the guest by another path and does not trace it; the events below did fire", report.exits),
            );
            continue;
        }
        let mapped = by_key.get(XRayKey::KvmSpte.as_str()).copied().unwrap_or(0);
        if key == XRayKey::KvmPageFault && n == 0 && mapped > 0 {
            x.push_missing(
                key,
                label,
                format!("neither kvm_page_fault nor fast_page_fault fired although KVM mapped {mapped} guest pages: this host's KVM (nested, paravirtual kvm-pvm) resolves them by another path; the mappings are counted below"),
            );
            continue;
        }
        x.push_count(key, label, n, &how);
    }
}

/// Parses the guest's x-ray line out of its console.
pub fn guest_line(console: &str) -> Option<BTreeMap<String, String>> {
    let line = console
        .lines()
        .find_map(|l| l.strip_prefix(stacklab_vmm::protocol::XRAY_LINE_PREFIX))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// The host CPU's vendor and, if the host is itself a VM, its hypervisor's
/// signature, as the server's own CPUID returns them.
fn host_cpuid() -> (String, Option<String>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let text = |regs: &[u32]| -> String {
            regs.iter()
                .flat_map(|r| r.to_le_bytes())
                .filter(|b| b.is_ascii_graphic())
                .map(char::from)
                .collect()
        };
        let l0 = __cpuid(0);
        let vendor = text(&[l0.ebx, l0.edx, l0.ecx]);
        let hv = (__cpuid(1).ecx & (1 << 31) != 0).then(|| {
            let h = __cpuid(0x4000_0000);
            text(&[h.ebx, h.ecx, h.edx])
        });
        (vendor, hv)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        ("not an x86 host".into(), None)
    }
}

const VENDOR: &str = "CPU vendor (CPUID leaf 0)";
const HYPERVISOR: &str = "Hypervisor signature (CPUID 0x40000000)";
const MEMORY: &str = "Memory";
const PRIVILEGE: &str = "Privilege level";

/// The rows only the tiny guest's x-ray line fills: without the line each
/// is missing, with why.
const FROM_THE_GUEST_LINE: [(XRayKey, &str); 4] = [
    (XRayKey::CpuVendor, VENDOR),
    (XRayKey::Hypervisor, HYPERVISOR),
    (XRayKey::GuestMemory, MEMORY),
    (XRayKey::Privilege, PRIVILEGE),
];

fn guest_view(x: &mut XRay, report: &VmReport, linux_release: Option<&str>) {
    let Some(g) = guest_line(&report.console) else {
        let why = match linux_release {
            Some(_) => {
                "not reported: a Linux guest's /init reports only its kernel release (`uname -r`)"
            }
            None => "not reported: the guest wrote no x-ray line",
        };
        for (key, label) in FROM_THE_GUEST_LINE {
            x.push_missing(key, label, why);
        }
        match linux_release {
            // A Linux guest's /init ran `uname -r`: the release of the
            // kernel the VMM booted, a second kernel even where the release
            // is the host's own (the same Debian package, booted twice).
            Some(release) => x.push_row(
                XRayKey::GuestKernel,
                "Kernel",
                Some(release.to_owned()),
                Some(crate::backends::host::kernel_release()),
                Some(false),
                "inside: `uname -r` run by the Linux guest's /init (the kernel the VMM booted in the VM); host: the host kernel's release (/proc/sys/kernel/osrelease): two kernels, even where the releases match",
            ),
            None => x.push_missing(
                XRayKey::GuestKernel,
                "The guest's own report",
                "the guest wrote no x-ray line to its console and reported no kernel release",
            ),
        }
        return;
    };
    let get = |k: &str| g.get(k).cloned();
    // A value the line lacks says so (the card would show a bare dash).
    let said = |k: &str| Some(get(k).unwrap_or_else(|| "not in the guest's report".into()));
    let host_release = crate::backends::host::kernel_release();
    match get("name") {
        // A kernel the VMM loaded into the VM's memory wrote this report:
        // a second kernel, even where its release matched the host's.
        Some(name) => x.push_row(
            XRayKey::GuestKernel,
            "Kernel",
            Some(
                format!("{name} {}", get("version").unwrap_or_default())
                    .trim()
                    .to_owned(),
            ),
            Some(host_release),
            Some(false),
            "inside: the name and version the guest kernel wrote in its console (a kernel the VMM loaded into the VM's memory); host: the host kernel's release (/proc/sys/kernel/osrelease): two kernels",
        ),
        None => x.push_missing(
            XRayKey::GuestKernel,
            "Kernel",
            "the guest's x-ray line named no kernel",
        ),
    }
    let (host_vendor, host_hv) = host_cpuid();
    x.push_row(
        XRayKey::CpuVendor,
        VENDOR,
        said("vendor"),
        Some(host_vendor),
        None,
        "CPUID executed by the guest kernel, and by the server on the host",
    );
    x.push_row(
        XRayKey::Hypervisor,
        HYPERVISOR,
        said("hypervisor"),
        Some(host_hv.map_or_else(
            || "none: the host runs on bare metal".into(),
            |h| format!("{h}: the host is itself a virtual machine"),
        )),
        None,
        "CPUID leaf 0x40000000, read when leaf 1 sets its hypervisor bit, by the guest and by the server",
    );
    // A size the line lacks is "not reported", never 0 MiB.
    let mib = |k: &str| {
        get(k)
            .and_then(|r| r.parse::<u64>().ok())
            .map_or("not reported".into(), |b| format!("{} MiB", b >> 20))
    };
    x.push_row(
        XRayKey::GuestMemory,
        MEMORY,
        Some(format!(
            "RAM (as the VMM told it): {}; identity-mapped at boot (the boot protocol's span, not a walk of the tables): {}, by {}; ring 3 only at 2-4 MiB",
            mib("ram"),
            mib("mapped"),
            match get("tables").as_deref() {
                Some("own") => "its own page tables (built at its 32-bit entry)",
                Some("vmm") => "page tables the VMM wrote before its first instruction (64-bit entry)",
                _ => "page tables it did not name",
            }
        )),
        Some(format!(
            "{} MiB of anonymous memory in the VMM process; {} backed by host pages at the end (only what the guest touched)",
            report.mem_bytes >> 20,
            report
                .touched_bytes
                .map_or("unknown".into(), |b| format!("{} KiB", b >> 10))
        )),
        None,
        "inside: the guest's report; host: the VMM's configuration and mincore() of the guest's memory",
    );
    x.push_row(
        XRayKey::Privilege,
        PRIVILEGE,
        get("cpl")
            .map(|c| format!("ring {c} (the low bits of its code segment): it believes it owns the CPU"))
            .or_else(|| said("cpl")),
        Some("the VMM is an ordinary user process (ring 3) of an unprivileged user; KVM runs the guest on its behalf".into()),
        None,
        "inside: CS & 3 read by the guest kernel; host: the VMM's jail (rows below)",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_guest_line() {
        let console = "stacklab-guest: ready\nstacklab-guest x-ray: name=stacklab-guest version=0.1.0 vendor=GenuineIntel hypervisor=KVMKVMKVM cpl=0 ram=16777216 mapped=16777216\n";
        let g = guest_line(console).unwrap();
        assert_eq!(g["hypervisor"], "KVMKVMKVM");
        assert_eq!(g["cpl"], "0");
        assert!(guest_line("nothing").is_none());
        // Whose page tables, as the guest said: the VMM's through the
        // 64-bit door, its own through the 32-bit one.
        for (said, whose) in [
            ("vmm", "page tables the VMM wrote"),
            ("own", "its own page tables"),
        ] {
            let mut x = XRay::default();
            let line = console.replace(" mapped=", &format!(" tables={said} mapped="));
            guest_view(&mut x, &report(&line), None);
            let memory = x.row(XRayKey::GuestMemory).unwrap().inside.clone().unwrap();
            assert!(
                memory.contains(&format!("not a walk of the tables): 16 MiB, by {whose}")),
                "{memory}"
            );
        }
    }

    fn report(console: &str) -> VmReport {
        VmReport {
            events: Vec::new(),
            console: console.into(),
            mem_bytes: 16 << 20,
            touched_bytes: None,
            exits: 0,
            exit_reasons: Default::default(),
            tsc_khz: 0,
            app_cycles: None,
            vmm_rss_bytes: None,
            vmm_pss_bytes: None,
            ioctls: Vec::new(),
            kvm_runs: 0,
        }
    }

    /// A Linux guest writes no x-ray line; its `uname -r` is its kernel
    /// row, its own even with the host's release. Without either, the row
    /// is missing with the reason.
    #[test]
    fn a_linux_guests_kernel_is_its_uname() {
        let host = crate::backends::host::kernel_release();
        let mut x = XRay::default();
        guest_view(&mut x, &report("Linux version …\n"), Some(&host));
        let row = x.row(XRayKey::GuestKernel).expect("a kernel row");
        assert_eq!(row.inside.as_deref(), Some(host.as_str()));
        assert_eq!(row.host.as_deref(), Some(host.as_str()));
        assert_eq!(row.same, Some(false), "booted in the VM: its own");
        for key in [
            XRayKey::CpuVendor,
            XRayKey::Hypervisor,
            XRayKey::GuestMemory,
            XRayKey::Privilege,
        ] {
            assert!(x.row(key).is_none(), "{key:?}");
            let why = x.missing(key).unwrap_or_else(|| panic!("{key:?} missing"));
            assert!(why.contains("only its kernel release"), "{key:?}: {why}");
        }
        let mut x = XRay::default();
        guest_view(&mut x, &report(""), None);
        assert!(x.row(XRayKey::GuestKernel).is_none());
        assert!(x
            .missing(XRayKey::Privilege)
            .is_some_and(|m| m.contains("no x-ray line")));
        assert!(x
            .missing(XRayKey::GuestKernel)
            .unwrap()
            .contains("no kernel release"));
    }

    /// A namespace whose link could not be read is named as not read, not
    /// left out of both lists; an empty list says "none".
    #[test]
    fn an_unreadable_namespace_is_said() {
        let inode = |who: &str, ns: &str| match (who, ns) {
            ("42", "net") => Err("/proc/42/ns/net: permission denied".to_owned()),
            (_, "user" | "time") => Ok(1),
            ("42", _) => Ok(2),
            _ => Ok(3),
        };
        assert_eq!(
            jail_namespaces("42", &inode),
            "its own: pid, mnt, uts, ipc, cgroup; shared with the server: user, time; not read: net"
        );
        assert_eq!(
            jail_namespaces("self", &inode),
            "its own: none; shared with the server: pid, net, mnt, uts, ipc, cgroup, user, time"
        );
    }

    /// A capture with no thread of the VMM to keep events for gives no
    /// counts, each missing with why, never 0 by construction.
    #[test]
    fn no_vmm_threads_no_counts() {
        let mut x = XRay::default();
        complete(
            &mut x,
            &report(""),
            None,
            &|ns| ns / 1000,
            Some((Ok((Vec::new(), 0)), Vec::new())),
            &HashSet::new(),
        );
        for (key, _) in KVM_COUNTS {
            assert_eq!(x.count(key), None, "{key:?}");
            assert!(
                x.missing(key)
                    .is_some_and(|m| m.contains("threads were not read")),
                "{key:?}: {:?}",
                x.missing(key)
            );
        }
    }

    /// A size the guest's line lacks is not reported, never 0 MiB.
    #[test]
    fn a_size_the_guest_did_not_report_is_not_zero() {
        let mut x = XRay::default();
        guest_view(
            &mut x,
            &report("stacklab-guest x-ray: name=stacklab-guest version=0.1.0 ram=16777216\n"),
            None,
        );
        let memory = x.row(XRayKey::GuestMemory).unwrap().inside.clone().unwrap();
        assert!(
            x.row(XRayKey::CpuVendor).unwrap().inside.as_deref()
                == Some("not in the guest's report")
                && x.row(XRayKey::Privilege).unwrap().inside.as_deref()
                    == Some("not in the guest's report")
                && memory.contains("RAM (as the VMM told it): 16 MiB")
                && memory.contains("tables): not reported, by page tables it did not name"),
            "{memory}"
        );
    }
}
