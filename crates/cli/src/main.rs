//! `isthmus`: subcommands only; the work is done in the library crates.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use isthmus_model::MeshConfig;

/// jemalloc: less fragmentation than the system allocator for a long-running control
/// plane with many small, long-lived objects, and exact allocation statistics.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes currently allocated by the process, per the allocator.
fn allocated_bytes() -> Option<u64> {
    #[cfg(not(target_env = "msvc"))]
    {
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        tikv_jemalloc_ctl::stats::allocated::read()
            .ok()
            .map(|b| b as u64)
    }
    #[cfg(target_env = "msvc")]
    None
}

#[derive(Parser)]
#[command(
    name = "isthmus",
    version,
    about = "A multi-cluster service mesh control plane that speaks Istio's APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print the merged multi-cluster registry: services, endpoints and network gateways.
    Registry {
        /// The mesh configuration.
        #[arg(long, default_value = "mesh.yaml")]
        mesh: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Validate manifests and Istio config like the validation webhook and `istioctl analyze`.
    Analyze {
        /// A mesh configuration: its clusters give context (services, workloads) and are analyzed too.
        #[arg(long)]
        mesh: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// Files or directories of Kubernetes-format YAML.
        paths: Vec<PathBuf>,
    },
    /// Benchmarks that print their figures.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Build a registry of synthetic clusters and measure time, memory and the cost of one change.
    Registry {
        #[arg(long, default_value_t = 10)]
        clusters: usize,
        #[arg(long, default_value_t = 300)]
        services: usize,
        /// Endpoints per cluster.
        #[arg(long, default_value_t = 4000)]
        endpoints: usize,
        /// How many single-endpoint changes to time.
        #[arg(long, default_value_t = 10_000)]
        changes: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that print findings themselves log only errors unless RUST_LOG says otherwise.
    let default_filter = match cli.command {
        Command::Registry { .. } | Command::Analyze { .. } | Command::Bench { .. } => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Registry { mesh, output } => {
            let mesh = MeshConfig::load(&mesh)?;
            let loaded = isthmus_registry::load::load(&mesh);
            for (cluster, d) in &loaded.diagnostics {
                eprintln!("{cluster}: {d}");
            }
            let report =
                isthmus_registry::report::RegistryReport::new(&mesh, &loaded.registry.snapshot());
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Table => print!("{}", report.to_table()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Analyze {
            mesh,
            output,
            paths,
        } => {
            let mesh = mesh.map(|m| MeshConfig::load(&m)).transpose()?;
            if mesh.is_none() && paths.is_empty() {
                anyhow::bail!("nothing to analyze: name files or directories, or --mesh mesh.yaml");
            }
            let analysis =
                isthmus_analyze::analyze(mesh.as_ref(), &paths).context("analysis failed")?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&analysis)?),
                Output::Table => print!("{}", isthmus_analyze::render(&analysis)),
            }
            // 79 is the exit status istioctl analyze uses when it finds errors.
            Ok(if analysis.has_errors() {
                ExitCode::from(79)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Bench {
            what:
                Bench::Registry {
                    clusters,
                    services,
                    endpoints,
                    changes,
                },
        } => {
            let figures = isthmus_registry::bench::run(
                &isthmus_registry::bench::Shape {
                    clusters,
                    services,
                    endpoints,
                    changes,
                },
                &allocated_bytes,
            );
            print!("{figures}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
