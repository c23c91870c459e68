//! `stacklab image`: build or show the PostgreSQL 15 image the container
//! demo runs.

use crate::backends::docker::{hello, image};
use crate::cli::ImageCommand;

/// The local Docker engine, checked to answer.
pub async fn connect_docker() -> anyhow::Result<bollard::Docker> {
    let docker = bollard::Docker::connect_with_local_defaults()?;
    docker.ping().await.map_err(|e| {
        anyhow::anyhow!(
            "the Docker engine is not reachable ({e}); start it as root with `dockerd &`"
        )
    })?;
    Ok(docker)
}

/// `stacklab image build|status`.
pub async fn command(cmd: ImageCommand) -> anyhow::Result<()> {
    let docker = connect_docker().await?;
    match cmd {
        ImageCommand::Build {
            offline,
            force,
            data_dir,
        } => {
            let started = std::time::Instant::now();
            let progress = |line: &str| eprintln!("stacklab image: {line}");
            let image =
                image::ensure(&docker, &data_dir.join("build"), offline, force, &progress).await?;
            eprintln!(
                "stacklab image: ready: {} ({:.0} MiB) after {:.1} s",
                image.reference,
                image.size_bytes as f64 / (1 << 20) as f64,
                started.elapsed().as_secs_f64()
            );
            if force || hello::find(&docker).await.is_err() {
                let size = hello::build(&docker).await?;
                eprintln!(
                    "stacklab image: ready: {} ({size} bytes)",
                    hello::HELLO_IMAGE
                );
            }
        }
        ImageCommand::Status => {
            let image = image::find(&docker).await?;
            println!(
                "{} ({:?}, {} bytes)",
                image.reference, image.kind, image.size_bytes
            );
            let size = hello::find(&docker).await?;
            println!("{} ({size} bytes)", hello::HELLO_IMAGE);
        }
    }
    Ok(())
}
