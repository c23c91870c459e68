//! `stacklab`: the one command users and scripts run.

use clap::Parser;
use stacklab_server::cli::{BenchCommand, Cli, Command, ImageCommand, LinuxCommand};
use stacklab_server::container::image;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "stacklab_server=info,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => stacklab_server::serve(args).await,
        Command::Image(cmd) => image_command(cmd).await,
        Command::Linux(LinuxCommand::Nested { guest, data_dir }) => nested(&guest, &data_dir),
        Command::Linux(LinuxCommand::Build {
            data_dir,
            vmm,
            force,
        }) => {
            let started = std::time::Instant::now();
            stacklab_server::linux_guest::build(&data_dir, &vmm, force).map(|a| {
                eprintln!(
                    "stacklab linux: kernel and initramfs archives ready in {} after {:.1} s",
                    a.kernel().parent().unwrap_or(&data_dir).display(),
                    started.elapsed().as_secs_f64()
                )
            })
        }
        Command::Bench(BenchCommand::Vm { n }) => stacklab_server::bench::vm(n),
        Command::Bench(BenchCommand::Container { n }) => match connect_docker().await {
            Ok(docker) => stacklab_server::bench::container(docker, n).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacklab: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The local Docker engine, checked to answer.
async fn connect_docker() -> anyhow::Result<bollard::Docker> {
    let docker = bollard::Docker::connect_with_local_defaults()?;
    docker.ping().await.map_err(|e| {
        anyhow::anyhow!(
            "the Docker engine is not reachable ({e}); start it as root with `dockerd &`"
        )
    })?;
    Ok(docker)
}

async fn image_command(cmd: ImageCommand) -> anyhow::Result<()> {
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
        }
        ImageCommand::Status => match image::find(&docker).await {
            Ok(image) => println!(
                "{} ({:?}, {} bytes)",
                image.reference, image.kind, image.size_bytes
            ),
            Err(e) => anyhow::bail!(e),
        },
    }
    Ok(())
}

/// `stacklab linux nested`: one emulated run, printed step by step.
fn nested(guest: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    use stacklab_vmm::protocol::Line;
    let artifacts = stacklab_server::linux_guest::LinuxArtifacts::in_data_dir(data_dir);
    eprintln!("stacklab linux: booting {guest} under QEMU's full emulation (a minute or less)…");
    let run = stacklab_server::linux_guest::run_nested(
        &artifacts,
        guest,
        std::time::Duration::from_secs(900),
    )?;
    let mut first = None;
    for line in &run.lines {
        match line {
            Line::Event(e) => {
                let t0 = *first.get_or_insert(e.mono_ns);
                println!(
                    "+{:>9.1} ms  {:<28} {}",
                    (e.mono_ns - t0) as f64 / 1e6,
                    e.label,
                    e.detail
                );
            }
            Line::Done {
                vmm_rss_bytes,
                guest,
                ..
            } => {
                println!(
                    "VMM RSS at the end: {} KiB; guest's own view: {guest:?}",
                    vmm_rss_bytes >> 10
                );
            }
            Line::Error { code, message } => println!("error {code}: {message}"),
        }
    }
    println!(
        "QEMU ran {:.1} s in all. All times are under software emulation: they show the order and the shape, not the speed of real hardware.",
        run.wall.as_secs_f64()
    );
    anyhow::ensure!(
        run.vmm_status == 0,
        "stacklab-vmm exited with {}",
        run.vmm_status
    );
    Ok(())
}
