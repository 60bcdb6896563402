//! `ferry`: runs MigrationJobs locally (`ferry run`) and prints the CRDs (`ferry crd`).

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use tracing_subscriber::EnvFilter;

mod credentials;
mod local;
mod manifests;
mod planner;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Moves and keeps in sync the contents of object stores"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run MigrationJobs in this process, without a cluster.
    Run(local::RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new("warn,aws_config=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml::to_string(&ferry_api::MigrationJob::crd()).expect("the CRD serializes")
            );
            0
        }
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(local::run(args))
        }
    };
    std::process::exit(code);
}
