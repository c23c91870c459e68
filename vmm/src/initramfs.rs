//! An initramfs writer: the "newc" cpio archive the Linux kernel unpacks
//! into its first root file system (see the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Every entry is a 110-byte ASCII header of thirteen 8-digit hex fields,
//! the NUL-terminated name, padding to 4 bytes, the data, padding to 4
//! bytes; the archive ends with an entry named `TRAILER!!!`. The kernel
//! takes it uncompressed, which keeps this writer dependency-free.

/// Regular file.
const S_IFREG: u32 = 0o100_000;
/// Directory.
const S_IFDIR: u32 = 0o040_000;
/// Symbolic link.
const S_IFLNK: u32 = 0o120_000;
/// Character device.
const S_IFCHR: u32 = 0o020_000;

/// Builds an archive entry by entry. Parents must be added before their
/// children (the kernel creates entries in archive order).
#[derive(Debug, Default)]
pub struct Initramfs {
    out: Vec<u8>,
    next_ino: u32,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Initramfs {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid: root
            0, // gid: root
            if mode & S_IFDIR == S_IFDIR { 2 } else { 1 },
            0, // mtime: fixed, so archives are reproducible
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check: unused in newc
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) -> &mut Self {
        self.entry(path, S_IFDIR | (perm & 0o7777), (0, 0), &[]);
        self
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.entry(path, S_IFREG | (perm & 0o7777), (0, 0), data);
        self
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, S_IFLNK | 0o777, (0, 0), target.as_bytes());
        self
    }

    /// A character device node (e.g. `/dev/console` is 5:1).
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(path, S_IFCHR | (perm & 0o7777), (major, minor), &[]);
        self
    }

    /// Every directory of `path` (`a/b/c` → `a`, `a/b`, `a/b/c`) that is not
    /// in `made` yet, with mode 0755.
    pub fn dirs_for(&mut self, path: &str, made: &mut Vec<String>) -> &mut Self {
        let mut so_far = String::new();
        for part in path.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            if !made.contains(&so_far) {
                made.push(so_far.clone());
                self.dir(&so_far.clone(), 0o755);
            }
        }
        self
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // The kernel reads archives in 512-byte blocks' worth happily; pad
        // like cpio(1) does so tools that expect it are content too.
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

/// One entry read back from an archive (for tests and checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path inside the archive.
    pub name: String,
    /// Type and permission bits.
    pub mode: u32,
    /// Device numbers of a device node.
    pub rdev: (u32, u32),
    /// File contents or link target.
    pub data: Vec<u8>,
}

/// Reads a newc archive back into its entries (without the trailer).
pub fn parse(mut bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let total = bytes.len();
    let mut entries = Vec::new();
    loop {
        let at = total - bytes.len();
        if bytes.len() < 110 || &bytes[..6] != b"070701" {
            return Err(format!("no newc header at offset {at}"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let s =
                std::str::from_utf8(&bytes[6 + i * 8..14 + i * 8]).map_err(|e| e.to_string())?;
            u32::from_str_radix(s, 16).map_err(|e| format!("field {i} at offset {at}: {e}"))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_end = 110 + namesize;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size;
        if bytes.len() < data_end || namesize == 0 {
            return Err(format!("entry at offset {at} runs past the end"));
        }
        let name = String::from_utf8_lossy(&bytes[110..name_end - 1]).into_owned();
        if name == "TRAILER!!!" {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            mode,
            rdev,
            data: bytes[data_start..data_end].to_vec(),
        });
        bytes = &bytes[data_end.next_multiple_of(4).min(bytes.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`sample`] holds, in archive order.
    const SAMPLE_NAMES: [&str; 7] = [
        "usr",
        "usr/bin",
        "usr/lib",
        "init",
        "usr/bin/five",
        "usr/bin/sh",
        "dev/console",
    ];

    fn sample() -> Vec<u8> {
        let mut a = Initramfs::new();
        let mut made = Vec::new();
        a.dirs_for("/usr/bin", &mut made)
            .dirs_for("usr/lib", &mut made)
            .file("/init", 0o755, b"#!/bin/sh\necho hi\n")
            .file("usr/bin/five", 0o644, b"12345")
            .symlink("usr/bin/sh", "busybox")
            .char_dev("dev/console", 0o600, 5, 1);
        a.finish()
    }

    #[test]
    fn entries_round_trip_with_their_types_and_padding() {
        let bytes = sample();
        assert_eq!(bytes.len() % 512, 0);
        let entries = parse(&bytes).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, SAMPLE_NAMES);
        assert_eq!(entries[0].mode, 0o040_755);
        assert_eq!(entries[3].mode, 0o100_755);
        assert_eq!(entries[3].data, b"#!/bin/sh\necho hi\n");
        assert_eq!(entries[4].data, b"12345", "5 bytes, then padding to 4");
        assert_eq!(entries[5].mode, 0o120_777);
        assert_eq!(entries[5].data, b"busybox");
        assert_eq!(entries[6].rdev, (5, 1));
    }

    #[test]
    fn headers_are_newc_and_names_are_relative() {
        let bytes = sample();
        assert_eq!(&bytes[..6], b"070701");
        // The first entry's name follows its 110-byte header.
        assert_eq!(&bytes[110..114], b"usr\0");
        // Header + name of every entry start on a 4-byte boundary.
        let mut offsets = Vec::new();
        let mut i = 0;
        while let Some(p) = bytes[i..].windows(6).position(|w| w == b"070701") {
            offsets.push(i + p);
            i += p + 6;
        }
        assert!(offsets.iter().all(|o| o % 4 == 0), "{offsets:?}");
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    /// GNU cpio, where installed, reads what we write.
    #[test]
    fn gnu_cpio_lists_the_archive() {
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            // ./dev installs cpio: CI must run this check.
            assert!(std::env::var_os("CI").is_none(), "cpio(1) is not installed");
            eprintln!("skipped: cpio(1) is not installed (apt-get install cpio)");
            return;
        };
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(listed.lines().collect::<Vec<_>>(), SAMPLE_NAMES);
    }

    #[test]
    fn a_truncated_archive_is_an_error_not_a_panic() {
        let bytes = sample();
        assert!(parse(&bytes[..200]).is_err());
        assert!(parse(b"not an archive").is_err());
    }
}
