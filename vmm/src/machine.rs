//! The VM every kind of guest shares: `/dev/kvm`, the VM, its interrupt
//! controllers and timer, and its RAM.

use kvm_bindings::{
    kvm_enable_cap, kvm_pit_config, kvm_userspace_memory_region, KVM_CAP_SPLIT_IRQCHIP,
};
use kvm_ioctls::Kvm;
use stacklab_api::Phase;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::error::{kvm_err, VmError};
use crate::report::{own_memory, resident_bytes, ExitCounts, Recorder, VmReport};

/// Which interrupt controllers the host kernel emulates for a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IrqChip {
    /// Only the local APIC, in the kernel (`KVM_CAP_SPLIT_IRQCHIP`; no PIC,
    /// IOAPIC or PIT): its timer is the tiny guest's tick. Creating the full
    /// set below costs milliseconds on some hosts (kvm-pvm: ~7 ms to create
    /// and ~16 ms to tear down); this costs microseconds.
    LapicOnly,
    /// PIC, IOAPIC and LAPIC in the kernel, and a PIT with these flags: what
    /// a Linux guest expects of a PC.
    Full { pit_flags: u32 },
}

/// A VM with its interrupt controllers, timer and RAM, before any guest is
/// loaded: the part every kind of guest shares.
pub(crate) struct Machine {
    pub kvm: Kvm,
    pub vm: kvm_ioctls::VmFd,
    pub memory: GuestMemoryMmap,
    pub mem_bytes: usize,
    pub host_addr: *mut u8,
}

impl Machine {
    /// Opens `/dev/kvm`, creates the VM with `irqchip`, and `mem_bytes` of
    /// RAM at guest address 0, recording each step.
    pub fn create(
        mem_bytes: usize,
        irqchip: IrqChip,
        rec: &mut Recorder,
    ) -> Result<Machine, VmError> {
        let kvm = rec
            .call("open /dev/kvm", Kvm::new)
            .map_err(kvm_err("opening /dev/kvm"))?;
        let api = rec.call("KVM_GET_API_VERSION", || kvm.get_api_version());
        rec.step(Phase::KvmOpened, format!("KVM API version {api}"), None);

        let vm = rec
            .call("KVM_CREATE_VM", || kvm.create_vm())
            .map_err(kvm_err("KVM_CREATE_VM"))?;
        // Intel needs a TSS region for real-mode emulation; elsewhere it is ignored or refused, both fine.
        let _ = rec.call("KVM_SET_TSS_ADDR", || vm.set_tss_address(0xfffb_d000));
        // The full set is created before the RAM is registered (the order a
        // PC's firmware implies); the local APIC alone after it: registering
        // RAM after KVM_CAP_SPLIT_IRQCHIP costs milliseconds on some hosts
        // (kvm-pvm: ~8 ms), before it microseconds.
        if let IrqChip::Full { pit_flags } = irqchip {
            rec.call("KVM_CREATE_IRQCHIP", || vm.create_irq_chip())
                .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
            rec.call("KVM_CREATE_PIT2", || {
                vm.create_pit2(kvm_pit_config {
                    flags: pit_flags,
                    ..Default::default()
                })
            })
            .map_err(kvm_err("KVM_CREATE_PIT2"))?;
        }
        rec.step(
            Phase::VmCreated,
            match irqchip {
                IrqChip::Full { .. } => "KVM_CREATE_VM, plus the in-kernel interrupt controllers and timer (PIC, IOAPIC, PIT)".into(),
                IrqChip::LapicOnly => "KVM_CREATE_VM: an empty virtual machine".into(),
            },
            None,
        );

        let (memory, host_addr) = rec.call("mmap + KVM_SET_USER_MEMORY_REGION", || {
            register_ram(&vm, mem_bytes)
        })?;
        if irqchip == IrqChip::LapicOnly {
            let cap = kvm_enable_cap {
                cap: KVM_CAP_SPLIT_IRQCHIP,
                // IOAPIC pins routed to user space: none are used.
                args: [24, 0, 0, 0],
                ..Default::default()
            };
            rec.call("KVM_ENABLE_CAP", || vm.enable_cap(&cap))
                .map_err(kvm_err("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)"))?;
        }
        rec.step(
            Phase::MemoryMapped,
            format!(
                "{} MiB of anonymous host memory registered as guest RAM (pages are only backed when touched){}",
                mem_bytes >> 20,
                if irqchip == IrqChip::LapicOnly {
                    "; then the local APIC in the host kernel (no PIC, IOAPIC or PIT: the guest's timer is the APIC's)"
                } else {
                    ""
                }
            ),
            None,
        );
        Ok(Machine {
            kvm,
            vm,
            memory,
            mem_bytes,
            host_addr,
        })
    }
}

/// `mem_bytes` of anonymous host memory, registered with `vm` as its RAM
/// at guest address 0 (slot 0), and its host address. Pages are backed only
/// when touched. The caller drops `vm` before the memory.
pub(crate) fn register_ram(
    vm: &kvm_ioctls::VmFd,
    mem_bytes: usize,
) -> Result<(GuestMemoryMmap, *mut u8), VmError> {
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_bytes)])
        .map_err(|e| VmError::Memory(e.to_string()))?;
    let host_addr = memory
        .get_host_address(GuestAddress(0))
        .map_err(|e| VmError::Memory(e.to_string()))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem_bytes as u64,
        userspace_addr: host_addr as u64,
    };
    // SAFETY: the region is backed by `memory`, which the caller keeps
    // alive until after the VM is dropped.
    unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    Ok((memory, host_addr))
}

impl Machine {
    /// The run's report, with memory measured now, while the VM still
    /// exists: the guest pages the host backs (mincore) and the VMM
    /// process's own RSS and PSS, guest pages included.
    pub fn report(
        &self,
        console: String,
        exits: ExitCounts,
        tsc_khz: u32,
        app_cycles: Option<u64>,
        rec: Recorder,
    ) -> VmReport {
        let (vmm_rss_bytes, vmm_pss_bytes) = own_memory();
        VmReport {
            ioctls: rec.ioctls,
            kvm_runs: rec.kvm_runs,
            events: rec.events,
            console,
            mem_bytes: self.mem_bytes,
            touched_bytes: resident_bytes(self.host_addr, self.mem_bytes),
            exits: exits.total(),
            exit_reasons: exits,
            tsc_khz,
            app_cycles,
            vmm_rss_bytes,
            vmm_pss_bytes,
        }
    }
}
