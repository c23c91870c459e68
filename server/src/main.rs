//! `stacklab`: the one command users and scripts run.

use clap::Parser;
use stacklab_server::cli::{BenchCommand, Cli, Command, LinuxCommand};
use stacklab_server::tools;

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
        Command::Serve(args) => stacklab_server::http::serve(args).await,
        Command::Image(cmd) => tools::image::command(cmd).await,
        Command::Export(args) => tools::export::command(&args),
        Command::Linux(LinuxCommand::Nested { guest, data_dir }) => {
            tools::nested::print(&guest, &data_dir)
        }
        Command::Linux(LinuxCommand::Build {
            data_dir,
            vmm,
            force,
        }) => {
            let started = std::time::Instant::now();
            tools::linux_build::build(&data_dir, &vmm, force).map(|a| {
                eprintln!(
                    "stacklab linux: kernel and initramfs archives ready in {} after {:.1} s",
                    a.kernel().parent().unwrap_or(&data_dir).display(),
                    started.elapsed().as_secs_f64()
                )
            })
        }
        Command::Bench(BenchCommand::Vm { n }) => tools::bench::vm(n).await,
        Command::Bench(BenchCommand::Soak { runs }) => tools::bench::soak(runs).await,
        Command::Bench(BenchCommand::Room {
            learners,
            container_slots,
            url,
        }) => tools::bench::room(learners, container_slots, url.as_deref()).await,
        Command::Bench(BenchCommand::Container { n }) => match tools::image::connect_docker().await
        {
            Ok(docker) => tools::bench::container(docker, n).await,
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
