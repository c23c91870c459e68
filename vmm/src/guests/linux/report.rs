//! What the guest's `/init` says to the VMM: values written to the
//! boot-complete register ([`milestone`]) and console lines starting with
//! `stacklab: ` ([`parse_report_line`]).

use serde::{Deserialize, Serialize};
use stacklab_api::Phase;

use crate::report::Recorder;

/// Values `/init` writes to the boot-complete register.
pub mod milestone {
    /// Userspace is running (Firecracker's boot-complete value).
    pub const BOOT_COMPLETE: u8 = stacklab_abi::BOOT_COMPLETE_VALUE;
    /// PostgreSQL inside the guest answered `SELECT 1` over its Unix socket.
    pub const POSTGRES_READY: u8 = 2;
}

/// What the guest's `/init` reported about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestView {
    /// `MemTotal` from the guest's `/proc/meminfo`, bytes.
    pub mem_total_bytes: Option<u64>,
    /// `MemAvailable` from the same file, bytes.
    pub mem_available_bytes: Option<u64>,
    /// `uname -r` inside the guest.
    pub kernel_release: Option<String>,
    /// Port and MMIO accesses to devices this machine does not have (the
    /// kernel probing for hardware), answered as "nothing there".
    pub ignored_accesses: u64,
}

/// One `stacklab: …` line from `/init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportLine {
    /// `stacklab: meminfo <MemTotal kB> <MemAvailable kB>`.
    Meminfo { total_kb: u64, available_kb: u64 },
    /// `stacklab: kernel <release>`.
    Kernel(String),
    /// `stacklab: say <text>`: a step worth showing, in `/init`'s words.
    Say(String),
}

/// Reads one console line from `/init`; `None` for any other line.
pub fn parse_report_line(line: &str) -> Option<ReportLine> {
    let rest = line.trim_end_matches('\r').strip_prefix("stacklab: ")?;
    let (what, args) = rest.split_once(' ').unwrap_or((rest, ""));
    match what {
        "meminfo" => {
            let mut n = args.split_whitespace().map(|v| v.parse::<u64>());
            Some(ReportLine::Meminfo {
                total_kb: n.next()?.ok()?,
                available_kb: n.next()?.ok()?,
            })
        }
        "kernel" if !args.is_empty() => Some(ReportLine::Kernel(args.trim().to_owned())),
        "say" if !args.is_empty() => Some(ReportLine::Say(args.trim().to_owned())),
        _ => None,
    }
}

pub(crate) fn report_line(line: &str, guest: &mut GuestView, rec: &mut Recorder) {
    match parse_report_line(line) {
        Some(ReportLine::Meminfo {
            total_kb,
            available_kb,
        }) => {
            guest.mem_total_bytes = Some(total_kb * 1024);
            guest.mem_available_bytes = Some(available_kb * 1024);
            rec.step(
                Phase::GuestMeminfo,
                format!("/proc/meminfo inside the guest: MemTotal {total_kb} kB, MemAvailable {available_kb} kB"),
                None,
            );
        }
        Some(ReportLine::Kernel(release)) => guest.kernel_release = Some(release),
        Some(ReportLine::Say(text)) => rec.step(Phase::GuestInit, text, None),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_parsed_and_others_ignored() {
        assert_eq!(
            parse_report_line("stacklab: meminfo 123456 100000\r"),
            Some(ReportLine::Meminfo {
                total_kb: 123_456,
                available_kb: 100_000
            })
        );
        assert_eq!(
            parse_report_line("stacklab: kernel 6.1.0-56-cloud-amd64"),
            Some(ReportLine::Kernel("6.1.0-56-cloud-amd64".into()))
        );
        assert_eq!(
            parse_report_line("stacklab: say initdb done"),
            Some(ReportLine::Say("initdb done".into()))
        );
        assert_eq!(parse_report_line("stacklab: meminfo lots"), None);
        assert_eq!(parse_report_line("[    0.1] stacklab: meminfo 1 2"), None);
        assert_eq!(parse_report_line("stacklab: unknown thing"), None);
    }
}
