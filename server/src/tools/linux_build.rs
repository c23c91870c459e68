//! `stacklab linux build`: the Linux guests' files. Debian's cloud kernel,
//! busybox and PostgreSQL 15 with every library it loads (fetched with
//! `apt-get download`, never committed), and the initramfs archives the
//! project writes itself around its own `/init` scripts
//! (`vmm/initramfs/*.init`), including the nested-emulation harnesses
//! (KVM modules, the static VMM, the kernel and a guest archive).
//! Everything lands in `<data dir>/linux/` (see
//! [`crate::backends::kvm::LinuxArtifacts`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use stacklab_vmm::initramfs::Initramfs;

use crate::backends::kvm::{LinuxArtifacts, LinuxGuestKind};

/// The Debian metapackage whose kernel the guests boot.
pub const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";
/// The Debian package with a static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

const LINUX_VM_INIT: &str = include_str!("../../../vmm/initramfs/linux-vm.init");
const NESTED_INIT: &str = include_str!("../../../vmm/initramfs/nested.init");
const POSTGRES_VM_INIT: &str = include_str!("../../../vmm/initramfs/postgres-vm.init");

/// The busybox applets the `/init` scripts call through `PATH`.
const APPLETS: &[&str] = &["sh", "mount", "echo", "cat", "grep", "sleep", "ls"];

/// PostgreSQL's programs the `postgres-vm` guest runs.
const POSTGRES_PROGRAMS: &[&str] = &["postgres", "initdb", "psql"];
/// Where Debian installs them.
const POSTGRES_BIN: &str = "usr/lib/postgresql/15/bin";

/// Whether every archive exists and is newer than `vmm` and this
/// program (which carries the `/init` scripts).
fn up_to_date(artifacts: &LinuxArtifacts, vmm: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let inputs = [Some(vmm.to_path_buf()), std::env::current_exe().ok()];
    let newest_input = inputs.iter().flatten().filter_map(|p| modified(p)).max();
    let mut outputs = vec![artifacts.kernel()];
    for kind in LinuxGuestKind::ALL {
        outputs.push(artifacts.initrd(kind));
        outputs.push(artifacts.nested_initrd(kind));
    }
    let oldest_output = outputs
        .iter()
        .map(|p| modified(p))
        .collect::<Option<Vec<_>>>();
    match (
        newest_input,
        oldest_output.and_then(|o| o.into_iter().min()),
    ) {
        (Some(input), Some(output)) => output > input,
        _ => false,
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The versioned kernel package the metapackage depends on, e.g.
/// `linux-image-6.1.0-56-cloud-amd64`.
fn resolve_kernel_package() -> anyhow::Result<String> {
    let out = run(Command::new("apt-cache").args(["depends", KERNEL_PACKAGE]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|p| p.trim().to_owned())
        .with_context(|| format!("apt-cache names no kernel package for {KERNEL_PACKAGE}"))
}

/// Downloads (once) and unpacks a package into `dir/<name>`; returns that
/// folder.
fn fetch_package(debs: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let unpacked = debs.join(package);
    if unpacked.is_dir() {
        return Ok(unpacked);
    }
    std::fs::create_dir_all(debs)?;
    let has_deb = |debs: &Path| -> anyhow::Result<Option<PathBuf>> {
        Ok(std::fs::read_dir(debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            }))
    };
    let deb = match has_deb(debs)? {
        Some(deb) => deb,
        None => {
            tracing::info!("apt-get download {package}");
            run(Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(debs))?;
            has_deb(debs)?.with_context(|| format!("apt-get download left no {package} .deb"))?
        }
    };
    let partial = debs.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    std::fs::rename(&partial, &unpacked)?;
    Ok(unpacked)
}

fn single_file(dir: &Path, starts_with: &str) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(starts_with))
        })
        .with_context(|| format!("no {starts_with}* in {}", dir.display()))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// busybox, its applet links, `/dev/console` and the mount points every
/// guest's `/init` needs.
fn base_archive(busybox: &[u8], init: &str) -> Initramfs {
    let mut a = Initramfs::new();
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        a.dir(d, 0o755);
    }
    // The kernel opens /dev/console for /init before any devtmpfs exists.
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("bin/busybox", 0o755, busybox);
    for applet in APPLETS {
        a.symlink(&format!("bin/{applet}"), "busybox");
    }
    a.file("init", 0o755, init.as_bytes());
    a
}

/// Writes `bytes` to `path` through a temporary file, so a reader never
/// sees half an archive.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `stacklab linux build`: fetches the kernel and busybox packages (once)
/// and writes the kernel and the initramfs archives. `vmm` is the static
/// `stacklab-vmm` the nested harness carries.
pub fn build(data_dir: &Path, vmm: &Path, force: bool) -> anyhow::Result<LinuxArtifacts> {
    let artifacts = LinuxArtifacts::in_data_dir(data_dir);
    if !force && up_to_date(&artifacts, vmm) {
        tracing::info!("the Linux guests' archives are up to date");
        return Ok(artifacts);
    }
    let debs = artifacts.dir().join("debs");
    let kernel_package = resolve_kernel_package()?;
    let kernel_root = fetch_package(&debs, &kernel_package)?;
    let busybox_root = fetch_package(&debs, BUSYBOX_PACKAGE)?;

    let vmlinuz = read(&single_file(&kernel_root.join("boot"), "vmlinuz-")?)?;
    write_atomically(&artifacts.kernel(), &vmlinuz)?;
    let busybox = read(&busybox_root.join("bin/busybox"))?;

    let linux_vm = base_archive(&busybox, LINUX_VM_INIT).finish();
    write_atomically(&artifacts.initrd(LinuxGuestKind::Plain), &linux_vm)?;

    let modules = single_file(&kernel_root.join("lib/modules"), "")?;
    let mut kvm_modules = Vec::new();
    for (name, path) in [
        ("irqbypass", "kernel/virt/lib/irqbypass.ko"),
        ("kvm", "kernel/arch/x86/kvm/kvm.ko"),
        ("kvm-amd", "kernel/arch/x86/kvm/kvm-amd.ko"),
    ] {
        kvm_modules.push((name, read(&modules.join(path))?));
    }
    let vmm = read(vmm)?;
    let nested = |kind: LinuxGuestKind, initrd: &[u8]| {
        let guest = kind.name();
        let mut a = base_archive(&busybox, NESTED_INIT);
        a.dir("modules", 0o755).dir("linux", 0o755);
        for (name, bytes) in &kvm_modules {
            a.file(&format!("modules/{name}.ko"), 0o644, bytes);
        }
        a.file("stacklab-vmm", 0o755, &vmm)
            .file("linux/vmlinuz", 0o644, &vmlinuz)
            .file(&format!("linux/{guest}.cpio"), 0o644, initrd)
            .file("guest", 0o644, guest.as_bytes())
            .file(
                "guest-mem-mib",
                0o644,
                kind.mem_mib().to_string().as_bytes(),
            );
        a.finish()
    };
    write_atomically(
        &artifacts.nested_initrd(LinuxGuestKind::Plain),
        &nested(LinuxGuestKind::Plain, &linux_vm),
    )?;

    let postgres_vm = postgres_archive(&debs, &busybox)?;
    write_atomically(&artifacts.initrd(LinuxGuestKind::Postgres), &postgres_vm)?;
    write_atomically(
        &artifacts.nested_initrd(LinuxGuestKind::Postgres),
        &nested(LinuxGuestKind::Postgres, &postgres_vm),
    )?;
    Ok(artifacts)
}

/// The shared libraries `elf` needs, as `(soname path, resolved file)`,
/// asking the host's dynamic loader with `roots`' library folders first.
fn needed_libraries(elf: &Path, roots: &[PathBuf]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let library_path = roots
        .iter()
        .flat_map(|r| {
            [
                r.join("lib/x86_64-linux-gnu"),
                r.join("usr/lib/x86_64-linux-gnu"),
            ]
        })
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let out = run(Command::new("/lib64/ld-linux-x86-64.so.2")
        .arg("--list")
        .arg("--library-path")
        .arg(&library_path)
        .arg(elf))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue;
        };
        let path = rest.split(" (").next().unwrap_or("").trim();
        if path == "not found" {
            bail!(
                "{} needs {name}, which no package provides here",
                elf.display()
            );
        }
        libs.push((name.to_owned(), PathBuf::from(path)));
    }
    Ok(libs)
}

/// The Debian package that owns the library at `path` on this host
/// (`dpkg -S`, by file name: with merged /usr, dpkg may have recorded it
/// under /lib or /usr/lib).
fn owning_package(path: &Path) -> anyhow::Result<String> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let out = run(Command::new("dpkg")
        .arg("-S")
        .arg(format!("*/x86_64-linux-gnu/{}", name.to_string_lossy())))?;
    out.lines()
        .next()
        .and_then(|l| l.split(':').next())
        .map(|p| p.trim().to_owned())
        .with_context(|| format!("dpkg knows no package for {}", path.display()))
}

/// The `postgres-vm` initramfs: busybox, our `/init`, and PostgreSQL 15's
/// server, `initdb` and `psql` with every library they load, all unpacked
/// from Debian's packages (fetched with `apt-get download`).
fn postgres_archive(debs: &Path, busybox: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut packages = vec![
        "postgresql-15".to_owned(),
        "postgresql-client-15".to_owned(),
        "tzdata".to_owned(),
    ];
    // Their direct library dependencies; deeper ones are found below.
    for p in ["postgresql-15", "postgresql-client-15"] {
        let out = run(Command::new("apt-cache").args(["depends", p]))?;
        packages.extend(
            out.lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .filter(|d| d.starts_with("lib") || d.starts_with("zlib"))
                // LLVM only serves the JIT, which the guest leaves out.
                .filter(|d| !d.starts_with("libllvm"))
                .map(str::to_owned),
        );
    }
    packages.sort();
    packages.dedup();
    let mut roots = Vec::new();
    for p in &packages {
        roots.push(fetch_package(debs, p)?);
    }
    let find =
        |roots: &[PathBuf], rel: &str| roots.iter().map(|r| r.join(rel)).find(|p| p.exists());
    // The programs, PostgreSQL's own modules (plpgsql, snowball…; not the
    // LLVM JIT, which is large and optional).
    let mut elves: Vec<(String, PathBuf)> = Vec::new();
    for prog in POSTGRES_PROGRAMS {
        let rel = format!("{POSTGRES_BIN}/{prog}");
        let path = find(&roots, &rel).with_context(|| format!("no {rel} in the packages"))?;
        elves.push((rel, path));
    }
    let pkglib = "usr/lib/postgresql/15/lib";
    let pkglib_dir = find(&roots, pkglib).context("no PostgreSQL lib folder")?;
    for entry in std::fs::read_dir(&pkglib_dir)?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".so") && !name.starts_with("llvmjit") {
            elves.push((format!("{pkglib}/{name}"), entry.path()));
        }
    }
    // Libraries, until every one comes from a fetched package: a library
    // the loader found on the host instead names its package, which is
    // fetched and the search repeated.
    let mut libs: Vec<(String, PathBuf)> = Vec::new();
    for _round in 0..8 {
        libs.clear();
        let mut outside = std::collections::BTreeSet::new();
        for (_, elf) in &elves {
            for (soname, path) in needed_libraries(elf, &roots)? {
                if !roots.iter().any(|r| path.starts_with(r)) {
                    outside.insert(path.clone());
                }
                if !libs.iter().any(|(n, _)| *n == soname) {
                    libs.push((soname, path));
                }
            }
        }
        if outside.is_empty() {
            break;
        }
        for path in outside {
            let package = owning_package(&path)?;
            if !packages.contains(&package) {
                roots.push(fetch_package(debs, &package)?);
                packages.push(package);
            }
        }
    }
    let loader = find(&roots, "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        .or_else(|| find(&roots, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
        .context("no ld-linux-x86-64.so.2 in libc6")?;

    let mut a = base_archive(busybox, POSTGRES_VM_INIT);
    let mut made: Vec<String> = ["bin", "dev", "proc", "sys", "tmp"]
        .map(String::from)
        .to_vec();
    a.dirs_for("etc", &mut made)
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n")
        .file("etc/group", 0o644, b"root:x:0:\npostgres:x:999:\n")
        .dirs_for("var/lib/postgresql", &mut made)
        .symlink("bin/su", "busybox")
        .symlink("bin/head", "busybox");
    let mut add = |a: &mut Initramfs, rel: &str, file: &Path| -> anyhow::Result<()> {
        let parent = Path::new(rel)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        a.dirs_for(&parent, &mut made);
        a.file(rel, 0o755, &read(file)?);
        Ok(())
    };
    add(&mut a, "lib64/ld-linux-x86-64.so.2", &loader)?;
    for (rel, path) in &elves {
        add(&mut a, rel, path)?;
    }
    for (soname, path) in &libs {
        // Where the loader will look: the library folder it was found in.
        let dir = if path.to_string_lossy().contains("/usr/lib/") {
            "usr/lib/x86_64-linux-gnu"
        } else {
            "lib/x86_64-linux-gnu"
        };
        add(&mut a, &format!("{dir}/{soname}"), path)?;
    }
    // initdb's templates and PostgreSQL's time zone abbreviations.
    let share = "usr/share/postgresql/15";
    let share_dir = find(&roots, share).context("no PostgreSQL share folder")?;
    let mut stack = vec![share_dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)?.filter_map(Result::ok) {
            let path = entry.path();
            let rel = format!("{share}/{}", path.strip_prefix(&share_dir)?.display());
            if rel.contains("/man") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                add(&mut a, &rel, &path)?;
            }
        }
    }
    for zone in ["usr/share/zoneinfo/UTC", "usr/share/zoneinfo/Etc/UTC"] {
        let file = find(&roots, zone).with_context(|| format!("no {zone} in tzdata"))?;
        add(&mut a, zone, &file)?;
    }
    Ok(a.finish())
}
