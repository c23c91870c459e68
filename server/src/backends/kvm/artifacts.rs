//! Where the VM demos' files are: the `stacklab-vmm` binary, the tiny guest
//! kernel, and the Linux guests' kernel and initramfs archives under
//! `<data dir>/linux/` (written by `stacklab linux build`).

use std::path::{Path, PathBuf};

use stacklab_vmm::jail::JailIds;

/// Where the VMM binary and the guest image are, and whom the VMM runs as.
#[derive(Debug, Clone)]
pub struct VmArtifacts {
    /// The `stacklab-vmm` executable.
    pub vmm: PathBuf,
    /// The guest kernel ELF.
    pub guest: PathBuf,
    /// The unprivileged user and group every VMM is jailed as.
    pub jail: JailIds,
}

/// The user VMMs run as unless `STACKLAB_VMM_USER` names another.
pub const VMM_USER: &str = "stacklab-vmm";

/// The user and group of `user` in `/etc/passwd` (text of it), if listed
/// and not root.
fn jail_ids(passwd: &str, user: &str) -> Result<JailIds, String> {
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .ok_or_else(|| {
            format!(
                "the VMM's jail user {user} does not exist; create it with `useradd --system --no-create-home --shell /usr/sbin/nologin {user}` (./dev does)"
            )
        })?;
    let fields: Vec<&str> = line.split(':').collect();
    let ids = format!(
        "{}:{}",
        fields.get(2).unwrap_or(&""),
        fields.get(3).unwrap_or(&"")
    );
    ids.parse()
        .map_err(|e| format!("user {user} cannot be the VMM's jail user: {e}"))
}

impl VmArtifacts {
    /// `STACKLAB_VMM_BIN` / `STACKLAB_GUEST_IMAGE`, else next to this
    /// executable and in the cargo target directory above it.
    pub fn locate() -> Result<VmArtifacts, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let near = |env: &str, names: &[&str]| -> Option<PathBuf> {
            if let Some(p) = std::env::var_os(env) {
                return Some(PathBuf::from(p));
            }
            // Each name in order of preference, in every directory above the
            // executable (target/release/stacklab → target/…).
            names
                .iter()
                .flat_map(|n| exe.ancestors().skip(1).map(move |dir| dir.join(n)))
                .find(|p| p.is_file())
        };
        // The static musl build first: a smaller process (about 0.5 MiB RSS
        // against 2.4 MiB for the glibc one) that starts faster.
        let vmm = near("STACKLAB_VMM_BIN", &["x86_64-unknown-linux-musl/release/stacklab-vmm", "stacklab-vmm"]).ok_or(
            "the stacklab-vmm binary was not found (build it: cargo build --release -p stacklab-vmm --target x86_64-unknown-linux-musl)",
        )?;
        let guest = near("STACKLAB_GUEST_IMAGE", &["x86_64-unknown-none/guest/stacklab-guest"]).ok_or(
            "the guest kernel was not found (build it: cargo build -p stacklab-guest --profile guest --target x86_64-unknown-none)",
        )?;
        let user = std::env::var("STACKLAB_VMM_USER").unwrap_or_else(|_| VMM_USER.to_owned());
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let jail = jail_ids(&passwd, &user)?;
        Ok(VmArtifacts { vmm, guest, jail })
    }
}

/// The two Linux guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinuxGuestKind {
    /// Busybox and an `/init` that reports boot-complete and resets.
    Plain,
    /// PostgreSQL 15 too, started by `/init` and reported ready.
    Postgres,
}

impl LinuxGuestKind {
    /// Both, in the order they are built.
    pub const ALL: [LinuxGuestKind; 2] = [LinuxGuestKind::Plain, LinuxGuestKind::Postgres];

    /// Its name (its initramfs is `<name>.cpio`; also its demo's id).
    pub fn name(self) -> &'static str {
        match self {
            LinuxGuestKind::Plain => "linux-vm",
            LinuxGuestKind::Postgres => "postgres-vm",
        }
    }

    /// Guest RAM in MiB. The PostgreSQL guest's initramfs (PostgreSQL and
    /// its libraries) and its database both live in it.
    pub fn mem_mib(self) -> u32 {
        match self {
            LinuxGuestKind::Plain => 128,
            LinuxGuestKind::Postgres => 512,
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A Linux guest ready to boot: Debian's kernel with one of the project's
/// initramfs archives.
#[derive(Debug, Clone)]
pub struct LinuxGuest {
    /// Which one.
    pub kind: LinuxGuestKind,
    /// The bzImage.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
}

/// Where the Linux guests' files are.
#[derive(Debug, Clone)]
pub struct LinuxArtifacts {
    dir: PathBuf,
}

impl LinuxArtifacts {
    /// The files under `<data_dir>/linux` (present or not).
    pub fn in_data_dir(data_dir: &Path) -> Self {
        LinuxArtifacts {
            dir: data_dir.join("linux"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel image.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The initramfs of guest `kind`.
    pub fn initrd(&self, kind: LinuxGuestKind) -> PathBuf {
        self.dir.join(format!("{}.cpio", kind.name()))
    }

    /// The nested-emulation harness's initramfs for `kind`.
    pub fn nested_initrd(&self, kind: LinuxGuestKind) -> PathBuf {
        self.dir.join(format!("nested-{}.cpio", kind.name()))
    }

    /// Guest `kind`, when its kernel and initramfs are built; else what is
    /// missing and how to build it.
    pub fn guest(&self, kind: LinuxGuestKind) -> Result<LinuxGuest, String> {
        for f in [self.kernel(), self.initrd(kind)] {
            if !f.is_file() {
                return Err(format!(
                    "{} is missing; build it with `stacklab linux build` (./dev does)",
                    f.display()
                ));
            }
        }
        Ok(LinuxGuest {
            kind,
            kernel: self.kernel(),
            initrd: self.initrd(kind),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jail_user_comes_from_passwd_and_is_never_root() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nstacklab-vmm:x:999:995::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            jail_ids(passwd, "stacklab-vmm"),
            Ok(JailIds { uid: 999, gid: 995 })
        );
        assert!(jail_ids(passwd, "root").unwrap_err().contains("cannot be"));
        assert!(jail_ids(passwd, "nobody").unwrap_err().contains("useradd"));
    }
}
