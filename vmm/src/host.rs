//! What `/dev/kvm` offers on this host.

use std::path::Path;

use kvm_ioctls::Kvm;
pub use stacklab_api::KvmBacking;

/// Why KVM is not usable here.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The device node does not exist: no KVM module, or not passed into this
    /// container/VM.
    #[error(
        "/dev/kvm does not exist: the kvm module is not loaded or the device is not passed through"
    )]
    Missing,
    /// The node exists but opening it or asking its version failed.
    #[error("/dev/kvm exists but cannot be used: {0}")]
    Unusable(#[from] kvm_ioctls::Error),
}

/// The result of a successful probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmHost {
    /// `KVM_GET_API_VERSION` (12 on every current kernel).
    pub api_version: i32,
    /// How guest code runs.
    pub backing: KvmBacking,
}

/// What kvm-pvm does to guests, as observed on the project's own nested
/// hosts (not a claim about its mechanism). One wording for the lessons,
/// the API and the server's refusals.
pub const KVM_PVM_OBSERVED: &str = "This server is itself a virtual machine, and its KVM is the nested kvm-pvm (the kvm_pvm module). Observed here: a guest's user-mode (ring 3) code runs at native speed; its kernel-mode (ring 0) code runs far slower and without SSE, XSAVE and other instructions Debian's Linux kernel uses at boot, so that kernel faults before userspace. The tiny guest, written to need none of them, runs.";

impl KvmHost {
    /// One sentence for a learner about what `backing` means for the demos.
    pub fn explanation(&self) -> &'static str {
        match self.backing {
            KvmBacking::HardwareAssisted => {
                "The CPU's virtualisation extensions (Intel VT-x or AMD-V) run guest code directly."
            }
            KvmBacking::NestedPvm => KVM_PVM_OBSERVED,
            KvmBacking::Unknown => {
                "KVM works, but neither CPU virtualisation flags nor a nested KVM module were found."
            }
        }
    }
}

/// Opens `/dev/kvm`, asks its API version and works out what backs it.
pub fn probe() -> Result<KvmHost, ProbeError> {
    if !Path::new("/dev/kvm").exists() {
        return Err(ProbeError::Missing);
    }
    let kvm = Kvm::new()?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Ok(KvmHost {
        api_version: kvm.get_api_version(),
        backing: classify(&cpuinfo, Path::new("/sys/module/kvm_pvm").exists()),
    })
}

/// Hardware-assisted when the CPU advertises `vmx` (Intel) or `svm` (AMD);
/// nested paravirtual when the `kvm_pvm` module is loaded instead.
pub fn classify(cpuinfo: &str, kvm_pvm_loaded: bool) -> KvmBacking {
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm");
    match (has_flag, kvm_pvm_loaded) {
        (_, true) => KvmBacking::NestedPvm,
        (true, false) => KvmBacking::HardwareAssisted,
        (false, false) => KvmBacking::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_cpu_flags_and_the_pvm_module() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        let plain = "flags\t\t: fpu vme hypervisor sse\n";
        assert_eq!(classify(vmx, false), KvmBacking::HardwareAssisted);
        assert_eq!(classify(plain, true), KvmBacking::NestedPvm);
        assert_eq!(classify(plain, false), KvmBacking::Unknown);
        // "svmx" or "vmxnet" must not count as a flag.
        assert_eq!(
            classify("flags : vmxnet svmx\n", false),
            KvmBacking::Unknown
        );
    }

    #[test]
    fn probes_this_host() {
        match probe() {
            Ok(host) => {
                assert_eq!(
                    host.api_version, 12,
                    "KVM_GET_API_VERSION is 12 since Linux 2.6.22"
                );
                // On this project's machines: /dev/kvm from the nested kvm_pvm module.
                if Path::new("/sys/module/kvm_pvm").exists() {
                    assert_eq!(host.backing, KvmBacking::NestedPvm);
                }
            }
            Err(ProbeError::Missing) => {
                eprintln!("skipped: /dev/kvm is absent on this host");
            }
            Err(e) => panic!("/dev/kvm exists but failed: {e}"),
        }
    }
}
