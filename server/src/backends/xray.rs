//! What both x-ray readers read of a host process through `/proc`: its
//! namespaces beside the server's own, its `status` fields (seccomp,
//! capabilities decoded into names), its LSM label. The container reader
//! is `docker/xray.rs`, the VM reader `kvm/xray.rs`; kernel events come
//! from `tracefs.rs`.
//!
//! May import `stacklab_api` only.

use std::fs;

/// The namespaces of `/proc/PID/ns`, in the order rows show them.
pub const NAMESPACES: [&str; 8] = ["pid", "net", "mnt", "uts", "ipc", "cgroup", "user", "time"];

/// The inode numbers the kernel gives its initial namespaces
/// (`include/linux/proc_ns.h`): the host's own, whatever the machine.
pub fn initial_inode(ns: &str) -> Option<u64> {
    Some(match ns {
        "ipc" => 0xEFFF_FFFF,
        "uts" => 0xEFFF_FFFE,
        "user" => 0xEFFF_FFFD,
        "pid" => 0xEFFF_FFFC,
        "cgroup" => 0xEFFF_FFFB,
        "time" => 0xEFFF_FFFA,
        _ => return None,
    })
}

/// The inode of `/proc/<who>/ns/<ns>` (`who`: a PID or `self`).
pub fn ns_inode(who: &str, ns: &str) -> Result<u64, String> {
    let path = format!("/proc/{who}/ns/{ns}");
    let link = fs::read_link(&path).map_err(|e| format!("{path}: {e}"))?;
    let text = link.to_string_lossy();
    text.rsplit_once('[')
        .and_then(|(_, n)| n.trim_end_matches(']').parse().ok())
        .ok_or_else(|| format!("{path} points to {text:?}"))
}

/// Whether the server runs in the host's initial namespaces, in words,
/// and whether it does (`None`: could not tell).
pub fn server_namespaces() -> (String, Option<bool>) {
    let mut own = Vec::new();
    let mut unknown = Vec::new();
    for ns in ["pid", "user", "uts", "ipc", "cgroup"] {
        match (ns_inode("self", ns), initial_inode(ns)) {
            (Ok(i), Some(init)) if i != init => own.push(ns),
            (Ok(_), _) => {}
            (Err(_), _) => unknown.push(ns),
        }
    }
    if !own.is_empty() {
        (
            format!(
                "the server itself runs in a container: its {} namespaces are not the host's initial ones, so \"the host\" below is the server's container",
                own.join(", ")
            ),
            Some(false),
        )
    } else if unknown.is_empty() {
        (
            "the server runs in the host's initial pid, user, uts, ipc and cgroup namespaces (their inode numbers are the kernel's fixed ones for the first namespaces): the host column is the host's".into(),
            Some(true),
        )
    } else {
        (
            format!(
                "could not read the server's own {} namespaces",
                unknown.join(", ")
            ),
            None,
        )
    }
}

/// `/proc/<who>/status` as (field, value) pairs.
pub fn status(who: &str) -> Result<Vec<(String, String)>, String> {
    let path = format!("/proc/{who}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

/// One field of a [`status`].
pub fn field<'a>(status: &'a [(String, String)], name: &str) -> Option<&'a str> {
    status
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Capability names by bit (`include/uapi/linux/capability.h`).
const CAPS: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// A `CapEff:` mask in words: "none", or the names (all of them shortened).
pub fn cap_names(hex: &str) -> String {
    let Ok(mask) = u64::from_str_radix(hex.trim(), 16) else {
        return format!("unreadable mask {hex:?}");
    };
    if mask == 0 {
        return "none (mask 0)".into();
    }
    let names: Vec<String> = (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            CAPS.get(bit)
                .map(|n| format!("cap_{n}"))
                .unwrap_or_else(|| format!("bit {bit}"))
        })
        .collect();
    if names.len() >= CAPS.len() {
        format!("all {} (mask {hex})", names.len())
    } else {
        format!("{} (mask {hex})", names.join(", "))
    }
}

/// `Seccomp:` in words.
pub fn seccomp_text(mode: &str) -> String {
    match mode {
        "0" => "0: no filter".into(),
        "1" => "1: strict mode".into(),
        "2" => "2: a BPF filter decides every system call".into(),
        other => other.into(),
    }
}

/// The Linux security module label of `who` (AppArmor, SELinux), or why
/// there is none.
pub fn lsm_label(who: &str) -> Result<String, String> {
    let active = fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    for path in [
        format!("/proc/{who}/attr/apparmor/current"),
        format!("/proc/{who}/attr/current"),
    ] {
        if let Ok(label) = fs::read_to_string(&path) {
            let label = label.trim_end_matches(['\0', '\n']).trim().to_owned();
            if !label.is_empty() {
                return Ok(label);
            }
        }
    }
    Err(if active.trim().is_empty() {
        "no label: no labelling security module is active (/sys/kernel/security/lsm is empty or unreadable)".into()
    } else {
        format!(
            "no label: the active modules ({}) label no process here",
            active.trim()
        )
    })
}

/// Names of the network interfaces in `who`'s network namespace.
pub fn interfaces(who: &str) -> Result<Vec<String>, String> {
    let path = format!("/proc/{who}/net/dev");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_owned())
        .collect())
}

/// Names of flags set in `value` from a table of (bit, name); leftovers
/// in hex.
pub fn flag_names(value: u64, table: &[(u64, &str)]) -> String {
    let mut rest = value;
    let mut names = Vec::new();
    for (bit, name) in table {
        if value & bit != 0 {
            names.push((*name).to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_decode_to_names() {
        assert_eq!(cap_names("0000000000000000"), "none (mask 0)");
        assert_eq!(
            cap_names("0000000000000401"),
            "cap_chown, cap_net_bind_service (mask 0000000000000401)"
        );
        assert!(cap_names("000001ffffffffff").starts_with("all 41"));
    }

    #[test]
    fn reads_its_own_namespaces_and_status() {
        let pid = ns_inode("self", "pid").unwrap();
        assert!(pid > 0);
        let s = status("self").unwrap();
        assert!(field(&s, "Seccomp").is_some());
        assert_eq!(flag_names(0x5, &[(1, "a"), (4, "c")]), "a|c");
        assert_eq!(flag_names(0x9, &[(1, "a")]), "a|0x8");
    }
}
