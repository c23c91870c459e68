//! The PostgreSQL 15 image: the official `postgres:15` where a registry is
//! reachable, otherwise stacklab's own, built offline from Debian's
//! `postgresql-15` package and imported through the Docker API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncBufReadExt;
use tokio_util::io::ReaderStream;

/// The official image, used where a registry is reachable.
pub const OFFICIAL_IMAGE: &str = "postgres:15";
/// stacklab's own image, built offline from Debian's `postgresql-15`.
pub const OFFLINE_IMAGE: &str = "stacklab/postgres:15-offline";
/// The imported root file system the offline image is built on.
const ROOTFS_IMAGE: &str = "stacklab/postgres:15-rootfs";
/// Our entrypoint, baked into the offline image.
const ENTRYPOINT: &str = include_str!("entrypoint.sh");
/// How long a registry pull may take before we fall back to the offline build.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// Which kind of image a reference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// `postgres:15` from a registry.
    Official,
    /// `stacklab/postgres:15-offline`.
    OfflineBuilt,
}

/// An image present in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentImage {
    /// Its reference (`name:tag`).
    pub reference: &'static str,
    /// Official or built here.
    pub kind: ImageKind,
    /// Size as the engine reports it (all layers).
    pub size_bytes: u64,
    /// The user PostgreSQL runs as inside (`postgres`), as `uid:gid`.
    pub postgres_uid_gid: Option<(u32, u32)>,
}

/// Failures of finding or building the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Neither image is present.
    #[error("no PostgreSQL 15 image: neither {OFFICIAL_IMAGE} nor {OFFLINE_IMAGE} is in the Docker engine. Build one with `stacklab image build` (the README's setup command does this)")]
    Missing,
    /// The hello-container image is not present.
    #[error("no {} image in the Docker engine. Build it with `stacklab image build` (the README's setup command does this)", super::hello::HELLO_IMAGE)]
    HelloMissing,
    /// The Docker API failed.
    #[error("Docker engine error: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// A host tool (debootstrap, tar) failed.
    #[error("{0}")]
    Tool(String),
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// The wire code of a run that could not find its image: a missing
    /// image, or an engine that did not answer (as while it restarts).
    pub fn run_error(self) -> stacklab_api::RunError {
        let code = match self {
            ImageError::Docker(_) => stacklab_api::ErrorCode::Docker,
            _ => stacklab_api::ErrorCode::ImageMissing,
        };
        stacklab_api::RunError {
            code,
            message: self.to_string(),
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// The image the container demo runs: the official one if present, else ours.
pub async fn find(docker: &Docker) -> Result<PresentImage, ImageError> {
    for (reference, kind) in [
        (OFFICIAL_IMAGE, ImageKind::Official),
        (OFFLINE_IMAGE, ImageKind::OfflineBuilt),
    ] {
        match docker.inspect_image(reference).await {
            Ok(image) => {
                return Ok(PresentImage {
                    reference,
                    kind,
                    size_bytes: image.size.unwrap_or_default().max(0) as u64,
                    postgres_uid_gid: match kind {
                        // Fixed by the official image's Dockerfile.
                        ImageKind::Official => Some((999, 999)),
                        ImageKind::OfflineBuilt => image
                            .config
                            .and_then(|c| c.labels)
                            .and_then(|l| l.get("stacklab.postgres-uid-gid").cloned())
                            .and_then(|v| parse_uid_gid(&v)),
                    },
                });
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ImageError::Missing)
}

fn parse_uid_gid(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// `stacklab image build`: make sure a PostgreSQL 15 image is present.
/// Tries the registry first (unless `offline_only`), then builds offline.
/// `progress` receives one line per step for the person waiting.
pub async fn ensure(
    docker: &Docker,
    work_dir: &Path,
    offline_only: bool,
    force: bool,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PresentImage, ImageError> {
    if !force {
        if let Ok(image) = find(docker).await {
            progress(&format!(
                "{} is already present; nothing to do",
                image.reference
            ));
            return Ok(image);
        }
    }
    if !offline_only {
        progress(&format!("pulling {OFFICIAL_IMAGE} from the registry"));
        match pull_official(docker, progress).await {
            Ok(()) => return find(docker).await,
            Err(e) => progress(&format!(
                "pull failed ({e}); building {OFFLINE_IMAGE} from Debian packages instead"
            )),
        }
    }
    build_offline(docker, work_dir, progress).await?;
    find(docker).await
}

async fn pull_official(
    docker: &Docker,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), ImageError> {
    let options = CreateImageOptionsBuilder::default()
        .from_image("postgres")
        .tag("15")
        .build();
    let pull = async {
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(info) = stream.next().await {
            let info = info?;
            if let Some(status) = info.status {
                let id = info.id.unwrap_or_default();
                progress(&format!("  {id} {status}"));
            }
        }
        Ok(())
    };
    tokio::time::timeout(PULL_TIMEOUT, pull)
        .await
        .map_err(|_| {
            ImageError::Tool(format!(
                "no answer from the registry within {PULL_TIMEOUT:?}"
            ))
        })?
}

/// Builds [`OFFLINE_IMAGE`]: debootstrap a minimal Debian 12 with
/// `postgresql-15`, slim it, add our entrypoint, import it as a root file
/// system, then add the image configuration with a one-line Dockerfile build
/// (`docker import` cannot set STOPSIGNAL).
pub async fn build_offline(
    docker: &Docker,
    work_dir: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), ImageError> {
    let mirror = debian_mirror()?;
    let rootfs = work_dir.join("postgres15-rootfs");
    if rootfs.exists() {
        tokio::fs::remove_dir_all(&rootfs)
            .await
            .map_err(io(format!("removing the old {}", rootfs.display())))?;
    }
    tokio::fs::create_dir_all(work_dir)
        .await
        .map_err(io(format!("creating {}", work_dir.display())))?;

    progress(&format!(
        "debootstrap bookworm with postgresql-15 from {mirror} (about a minute)"
    ));
    let mut child = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", "--include=postgresql-15", "bookworm"])
        .arg(&rootfs)
        .arg(&mirror)
        .stdout(Stdio::piped())
        // debootstrap's errors (rare, short) go straight to our stderr.
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            ImageError::Tool(format!(
                "cannot run debootstrap ({e}); install it with `apt-get install debootstrap`"
            ))
        })?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut last = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with("I: Retrieving Release")
            || line.starts_with("I: Installing")
            || line.starts_with("I: Base system")
        {
            progress(&format!("  {line}"));
        }
        last.push(line);
        if last.len() > 20 {
            last.remove(0);
        }
    }
    let status = child.wait().await.map_err(io("waiting for debootstrap"))?;
    if !status.success() {
        return Err(ImageError::Tool(format!(
            "debootstrap failed ({status}); its last lines:\n{}",
            last.join("\n")
        )));
    }

    progress("slimming the root file system and adding the entrypoint");
    slim_rootfs(&rootfs)?;
    let uid_gid = postgres_uid_gid(&rootfs)?;

    progress(&format!("importing the root file system as {ROOTFS_IMAGE}"));
    let mut tar = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "-c", "."])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ImageError::Tool(format!("cannot run tar: {e}")))?;
    let body = bollard::body_try_stream(ReaderStream::new(tar.stdout.take().expect("piped")));
    let (repo, tag) = ROOTFS_IMAGE.split_once(':').expect("name:tag");
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(options), Some(body), None);
    while let Some(info) = stream.next().await {
        info?;
    }
    let status = tar.wait().await.map_err(io("waiting for tar"))?;
    if !status.success() {
        return Err(ImageError::Tool(format!(
            "tar of the root file system failed: {status}"
        )));
    }

    progress(&format!(
        "adding the image configuration as {OFFLINE_IMAGE}"
    ));
    let dockerfile = format!(
        "FROM {ROOTFS_IMAGE}\n\
         ENV PGDATA=/var/lib/postgresql/data/pgdata LANG=C.UTF-8\n\
         EXPOSE 5432\n\
         STOPSIGNAL SIGINT\n\
         USER postgres\n\
         LABEL stacklab.image=postgres-15-offline stacklab.postgres-uid-gid={}:{}\n\
         ENTRYPOINT [\"/usr/local/bin/stacklab-entrypoint\"]\n\
         CMD [\"postgres\"]\n",
        uid_gid.0, uid_gid.1
    );
    let context = dockerfile_context(&dockerfile).map_err(io("packing the Dockerfile"))?;
    let options = BuildImageOptionsBuilder::default()
        .t(OFFLINE_IMAGE)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(info) = stream.next().await {
        let info = info?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Tool(format!("image build failed: {err}")));
        }
    }
    // The final image keeps the layer; only the intermediate name goes.
    let _ = docker
        .remove_image(
            ROOTFS_IMAGE,
            Some(RemoveImageOptionsBuilder::default().noprune(true).build()),
            None,
        )
        .await;
    let _ = tokio::fs::remove_dir_all(&rootfs).await;
    progress(&format!("built {OFFLINE_IMAGE}"));
    Ok(())
}

/// Removes what a database server never reads (apt caches and lists,
/// documentation, translations, the default cluster Debian creates, the LLVM
/// JIT: the entrypoint runs PostgreSQL with `jit=off`), then adds our entrypoint.
fn slim_rootfs(rootfs: &Path) -> Result<(), ImageError> {
    let remove = [
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/lib/postgresql/15",
        "etc/postgresql/15",
        "usr/lib/postgresql/15/lib/bitcode",
        "usr/lib/postgresql/15/lib/llvmjit.so",
        "usr/lib/postgresql/15/lib/llvmjit_types.bc",
    ];
    for rel in remove {
        let path = rootfs.join(rel);
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", path.display()))(e)),
        }
    }
    let lib = rootfs.join("usr/lib/x86_64-linux-gnu");
    for entry in std::fs::read_dir(&lib).map_err(io(format!("reading {}", lib.display())))? {
        let entry = entry.map_err(io("reading a directory entry"))?;
        if entry.file_name().to_string_lossy().starts_with("libLLVM") {
            std::fs::remove_file(entry.path()).map_err(io("removing libLLVM"))?;
        }
    }
    let entrypoint = rootfs.join("usr/local/bin/stacklab-entrypoint");
    std::fs::write(&entrypoint, ENTRYPOINT).map_err(io("writing the entrypoint"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&entrypoint, std::fs::Permissions::from_mode(0o755))
        .map_err(io("making the entrypoint executable"))?;
    Ok(())
}

/// The `postgres` user's uid and gid in the new root file system.
fn postgres_uid_gid(rootfs: &Path) -> Result<(u32, u32), ImageError> {
    let passwd =
        std::fs::read_to_string(rootfs.join("etc/passwd")).map_err(io("reading etc/passwd"))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| ImageError::Tool("the root file system has no postgres user".into()))
}

fn dockerfile_context(dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
    builder.into_inner()
}

/// The Debian mirror this host's apt uses for bookworm (never hard-coded).
pub fn debian_mirror() -> Result<String, ImageError> {
    let mut texts = Vec::new();
    for file in apt_source_files() {
        if let Ok(text) = std::fs::read_to_string(&file) {
            texts.push((file, text));
        }
    }
    texts
        .iter()
        .find_map(|(file, text)| {
            if file.extension().is_some_and(|e| e == "sources") {
                mirror_from_deb822(text)
            } else {
                mirror_from_one_line(text)
            }
        })
        .ok_or_else(|| {
            ImageError::Tool(
                "no Debian bookworm mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d"
                    .into(),
            )
        })
}

fn apt_source_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// `deb [options] URI bookworm main …` lines.
fn mirror_from_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix("deb ")?;
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(r) => r.split_once(']')?.1,
            None => rest,
        };
        let mut fields = rest.split_whitespace();
        let uri = fields.next()?;
        let suite = fields.next()?;
        (suite == "bookworm").then(|| uri.to_owned())
    })
}

/// deb822 stanzas: `Types: deb`, `URIs: …`, `Suites: bookworm …`.
fn mirror_from_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let types = field("Types")?;
        let suites = field("Suites")?;
        let uri = field("URIs")?;
        (types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == "bookworm"))
        .then(|| uri.split_whitespace().next().unwrap_or_default().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_both_apt_formats() {
        let one_line = "# comment\ndeb-src http://x/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_one_line(one_line).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_from_one_line("deb http://m/debian-security bookworm-security main"),
            None
        );
        let deb822 = "Types: deb\n# a note\nURIs: http://snap.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_deb822(deb822).as_deref(),
            Some("http://snap.example/debian")
        );
        assert_eq!(
            mirror_from_deb822("Types: deb-src\nURIs: http://x\nSuites: bookworm\n"),
            None
        );
    }

    #[test]
    fn this_host_has_a_mirror() {
        let mirror = debian_mirror().expect("the host's apt names a bookworm mirror");
        assert!(mirror.starts_with("http"), "{mirror}");
    }

    #[test]
    fn parses_uid_gid_labels() {
        assert_eq!(parse_uid_gid("100:102"), Some((100, 102)));
        assert_eq!(parse_uid_gid("x:1"), None);
    }

    #[test]
    fn the_entrypoint_is_the_real_script() {
        assert!(ENTRYPOINT.starts_with("#!/bin/sh"));
        assert!(ENTRYPOINT.contains("POSTGRES_PASSWORD"));
        assert!(ENTRYPOINT.contains("exec postgres"));
    }
}
