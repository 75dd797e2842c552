//! `isthmus`: subcommands only; the work is done in the library crates.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Run Envoy for one workload or gateway, like Istio's pilot-agent: write its
    /// bootstrap, start it and restart it if it dies, serve /healthz/ready, and on
    /// SIGTERM or SIGINT drain its listeners and stop it.
    Agent(Box<AgentArgs>),
    /// Serve xDS (ADS, State-of-the-World and Delta) to Envoy proxies from the mesh's registry.
    Discovery {
        /// The mesh configuration.
        #[arg(long, default_value = "mesh.yaml")]
        mesh: PathBuf,
        /// Where proxies connect (plaintext gRPC, Istio's 15010).
        #[arg(long, default_value = "0.0.0.0:15010")]
        grpc_address: std::net::SocketAddr,
        /// The debug API: /ready, /debug/syncz, /debug/registryz, /debug/config_dump?proxyID=.
        #[arg(long, default_value = "127.0.0.1:8080")]
        debug_address: std::net::SocketAddr,
        /// xDS and the CA over TLS (Istio's 15012), with the control plane's certificate
        /// from the mesh's CA; `off` serves neither.
        #[arg(long, value_name = "ADDR|off", default_value = "0.0.0.0:15012", value_parser = parse_optional_address)]
        secure_grpc_address: MaybeAddress,
        /// Once listening, write the bound addresses here as JSON
        /// (`{"grpc":ADDR,"debug":ADDR}`): with port 0 in an address, the port chosen.
        #[arg(long, value_name = "FILE")]
        address_file: Option<PathBuf>,
        /// A push waits until the registry has been quiet this long (`10ms`, `0` for none).
        #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_duration)]
        debounce: Duration,
        /// …but no longer than this after the first change it carries.
        #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
        debounce_max: Duration,
    },
    /// Stand-ins for Istio's sample apps, for tests and demos.
    App {
        #[command(subcommand)]
        app: App,
    },
    /// Whole clusters on this host without Kubernetes: pods in network namespaces with
    /// real Envoy sidecars, Istio's sample manifests applied like with kubectl (root).
    Lab {
        /// Where the lab keeps its state, logs and the control plane's manifests
        /// (default: ISTHMUS_LAB_DIR, else /run/isthmus-lab).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        /// The lab's name: its network namespaces are il-NAME and il-NAME-N (default
        /// ISTHMUS_LAB_NAME, else "lab"); several labs with different names and
        /// directories can run at once.
        #[arg(long, global = true, env = "ISTHMUS_LAB_NAME", default_value = "lab")]
        name: String,
        #[command(subcommand)]
        command: isthmus_lab::cli::LabCommand,
    },
    /// Make a plug-in CA for a multicluster mesh, in Istio's cacerts layout: one root
    /// (DIR/root-cert.pem, reused if present) and an intermediate per cluster
    /// (DIR/NAME/{ca-cert,ca-key,root-cert,cert-chain}.pem), so clusters share a root of
    /// trust but not a signing key. Point mesh.yaml `ca.cacerts` at DIR/NAME.
    CreateCacerts {
        /// The directory to write.
        #[arg(long)]
        out: PathBuf,
        /// A cluster to make an intermediate for (repeat for each).
        #[arg(long = "cluster", value_name = "NAME", required = true)]
        clusters: Vec<String>,
    },
    /// Benchmarks that print their figures.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

/// `isthmus agent`'s flags; the environment variables are the ones Istio's sidecar
/// injector sets.
#[derive(clap::Args)]
struct AgentArgs {
    /// Run a gateway (node id `router~…`) instead of a sidecar.
    #[arg(long)]
    router: bool,
    /// The Envoy binary (default: ISTHMUS_ENVOY, else the .venv that scripts/envoy.sh
    /// makes in the checkout above this binary or the current directory, else `envoy`
    /// on PATH).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// The control plane's xDS address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:15010")]
    discovery_address: isthmus_agent::DiscoveryAddress,
    /// Envoy's admin address (loopback only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    admin_address: SocketAddr,
    /// The port of GET /healthz/ready, on every address.
    #[arg(long, value_name = "N", default_value_t = isthmus_agent::DEFAULT_READINESS_PORT)]
    readiness_port: u16,
    /// Where to write the bootstrap (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// The pod's IP.
    #[arg(
        long,
        value_name = "IP",
        env = "INSTANCE_IP",
        default_value = "127.0.0.1"
    )]
    node_ip: IpAddr,
    /// The pod's name (default: the host name).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pod_name: Option<String>,
    /// The pod's namespace.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Service hostnames are NAME.NS.svc.DOMAIN_SUFFIX.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    domain_suffix: String,
    /// The cluster the proxy runs in.
    #[arg(
        long,
        value_name = "ID",
        env = "ISTIO_META_CLUSTER_ID",
        default_value = "Kubernetes"
    )]
    cluster_id: String,
    /// The proxy's network.
    #[arg(
        long,
        value_name = "NET",
        env = "ISTIO_META_NETWORK",
        default_value = ""
    )]
    network: String,
    /// The mesh's id.
    #[arg(
        long,
        value_name = "ID",
        env = "ISTIO_META_MESH_ID",
        default_value = ""
    )]
    mesh_id: String,
    /// The pod's service account.
    #[arg(
        long,
        value_name = "SA",
        env = "SERVICE_ACCOUNT",
        default_value = "default"
    )]
    service_account: String,
    /// The pod's labels.
    #[arg(long, value_name = "k=v,k=v", value_parser = isthmus_agent::parse_labels)]
    labels: Option<BTreeMap<String, String>>,
    /// Gateways: the networks whose endpoints this proxy serves.
    #[arg(
        long,
        value_name = "NET,NET",
        env = "ISTIO_META_REQUESTED_NETWORK_VIEW",
        value_delimiter = ','
    )]
    requested_network_view: Vec<String>,
    /// How long listeners drain on shutdown before Envoy is stopped.
    #[arg(long, value_name = "N", default_value_t = 5)]
    drain_seconds: u64,
    /// The mesh's root certificate(s). With it the agent gets the workload's
    /// certificate from the CA (at --ca-address) and serves it to Envoy over SDS, and
    /// Envoy's xDS connection uses TLS checked against it (use the control plane's
    /// 15012 as --discovery-address).
    #[arg(long, value_name = "PEM")]
    ca_root_cert: Option<PathBuf>,
    /// The CA's address (default: the discovery address).
    #[arg(long, value_name = "HOST:PORT", env = "CA_ADDR")]
    ca_address: Option<isthmus_agent::DiscoveryAddress>,
    /// The name the control plane's certificate must carry.
    #[arg(long, value_name = "DNS", default_value = "istiod.istio-system.svc")]
    ca_server_name: String,
    /// The pod's service-account token (audience istio-ca), read at every request.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    token_file: PathBuf,
    /// The trust domain of the workload's identity.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// The workload certificate's requested validity (0: the CA's default).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    workload_cert_ttl: Duration,
}

impl AgentArgs {
    fn into_config(self) -> isthmus_agent::AgentConfig {
        let mut config = isthmus_agent::AgentConfig {
            kind: if self.router {
                isthmus_agent::ProxyKind::Router
            } else {
                isthmus_agent::ProxyKind::Sidecar
            },
            node_ip: self.node_ip,
            pod_name: self.pod_name.unwrap_or_else(isthmus_agent::host_name),
            namespace: self.namespace,
            domain_suffix: self.domain_suffix,
            cluster_id: self.cluster_id,
            network: self.network,
            mesh_id: self.mesh_id,
            service_account: self.service_account,
            labels: self.labels.unwrap_or_default(),
            requested_network_view: self.requested_network_view,
            extra_metadata: BTreeMap::new(),
            discovery_address: self.discovery_address,
            admin_address: self.admin_address,
            readiness_port: self.readiness_port,
            config_dir: self.config_dir,
            envoy_binary: self.envoy,
            drain_duration: Duration::from_secs(self.drain_seconds),
            identity: None,
            sds_socket: None,
        };
        if let Some(root_cert) = self.ca_root_cert {
            config.identity = Some(isthmus_agent::identity::IdentityConfig {
                ca_address: self
                    .ca_address
                    .unwrap_or_else(|| config.discovery_address.clone()),
                ca_server_name: self.ca_server_name,
                root_cert,
                token_file: self.token_file,
                trust_domain: self.trust_domain,
                requested_ttl: self.workload_cert_ttl,
            });
        }
        config.apply_istio_meta_env(std::env::vars());
        config
    }
}

#[derive(Subcommand)]
enum App {
    /// An HTTP server that answers any request with who it is (service, version, pod,
    /// cluster), the method, path and headers it received.
    Echo {
        /// An address to listen on (repeatable).
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
        listen: Vec<SocketAddr>,
        #[arg(long, default_value = "echo")]
        service: String,
        #[arg(long, default_value = "v1")]
        version: String,
        /// The pod's name (default: the host name).
        #[arg(long, env = "POD_NAME")]
        pod: Option<String>,
        #[arg(long, default_value = "")]
        cluster: String,
        /// The status of every answer (a request's `?status=N` overrides it).
        #[arg(long, value_name = "N", default_value_t = 200)]
        status: u16,
    },
    /// The stand-in for a container image, as `isthmus lab` runs each pod: Bookinfo's
    /// productpage, details, reviews v1/v2/v3 and ratings, helloworld v1/v2, an idle
    /// client (curl, sleep, busybox…), or else the echo on every port. Stops on
    /// SIGTERM/SIGINT.
    Run {
        /// The container's image, e.g. `docker.io/istio/examples-bookinfo-reviews-v2:1.20.3`.
        #[arg(long)]
        image: String,
        /// The pod's name (`HOSTNAME` for the app; default: the host name).
        #[arg(long, env = "POD_NAME")]
        pod: Option<String>,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value = "")]
        cluster: String,
        /// A container port (repeatable; default: the sample's, 9080 or 5000).
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<u16>,
        /// A container environment variable (repeatable; later wins).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = isthmus_apps::run::parse_key_value)]
        env: Vec<(String, String)>,
        /// A pod label (repeatable): `app` and `version` name the echo's service and version.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = isthmus_apps::run::parse_key_value)]
        labels: Vec<(String, String)>,
        /// The address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        address: IpAddr,
        /// Run this shell command line instead of any stand-in (`/bin/sh -c LINE sh
        /// COMMAND ARGS…`) and exit with its code.
        #[arg(long, value_name = "SHELL-LINE")]
        command: Option<String>,
        /// The container's command and args (only given to `--command`, as "$@").
        #[arg(last = true, value_name = "COMMAND")]
        args: Vec<String>,
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
    /// Simulated Envoy sidecars (SotW and Delta) against `isthmus discovery` run as a
    /// child process: time to a full config, push convergence, the control plane's CPU
    /// and memory.
    Xds {
        #[arg(long, default_value_t = 100)]
        proxies: usize,
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Endpoints per service.
        #[arg(long, default_value_t = 2)]
        endpoints: usize,
        /// Proxies connected one at a time once the others are, for the per-proxy figure.
        #[arg(long, default_value_t = 20)]
        new_proxies: usize,
        /// Endpoint changes timed.
        #[arg(long, default_value_t = 10)]
        pushes: usize,
        /// Passed to `isthmus discovery --debounce`.
        #[arg(long, value_name = "DURATION")]
        debounce: Option<String>,
        /// The `isthmus` binary whose `discovery` is measured (default: this one).
        #[arg(long, value_name = "PATH")]
        control_plane: Option<PathBuf>,
        /// Keep the generated manifests and the control plane's log.
        #[arg(long)]
        keep: bool,
    },
    /// `isthmus lab up` (topology single) with bookinfo and its ingress gateway, from
    /// nothing to every pod ready, and the memory of the whole lab (root).
    Lab {
        /// Where the benchmark's lab lives while it runs (removed afterwards).
        #[arg(long, default_value = "/run/isthmus-lab-bench")]
        dir: PathBuf,
    },
    /// The CA (ECDSA P-256): certificates signed per second on one core, and the time
    /// for N agents starting at once to all hold certificates from `isthmus discovery`
    /// run as a child process (over TLS, with service-account tokens).
    Ca {
        /// How long each one-core loop runs, in seconds.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Agents starting at once (0: only the one-core figures).
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// The `isthmus` binary whose `discovery` is measured (default: this one).
        #[arg(long, value_name = "PATH")]
        control_plane: Option<PathBuf>,
        /// Keep the control plane's directory and log.
        #[arg(long)]
        keep: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    isthmus_xds::secure::install_crypto_provider();
    // Commands that print findings themselves log only errors unless RUST_LOG says otherwise.
    let default_filter = match cli.command {
        Command::Registry { .. }
        | Command::Analyze { .. }
        | Command::Bench { .. }
        | Command::CreateCacerts { .. } => "error",
        // The agent's own events and Envoy's log lines (target `envoy`).
        Command::Agent(_) | Command::Discovery { .. } | Command::App { .. } => "info",
        Command::Lab { .. } => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for people: lab containers log to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A listen address, or `off` for none.
#[derive(Clone, Debug)]
struct MaybeAddress(Option<std::net::SocketAddr>);

fn parse_optional_address(s: &str) -> Result<MaybeAddress, String> {
    if s == "off" {
        return Ok(MaybeAddress(None));
    }
    s.parse()
        .map(|a| MaybeAddress(Some(a)))
        .map_err(|_| format!("{s:?} is not an address like 0.0.0.0:15012, or `off`"))
}

/// A duration in Go's syntax: `10ms`, `1.5s`, `0`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    isthmus_model::istio::validate::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 10ms, 1s or 0"))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Lab { dir, name, command } => {
            let dir = isthmus_lab::cli::lab_dir(dir);
            let mut stdout = std::io::stdout();
            // A lab error's message already holds its causes: shown once.
            let code = isthmus_lab::cli::run(command, &dir, &name, &mut stdout)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
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
        Command::Agent(args) => {
            let config = args.into_config();
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(isthmus_agent::run_until_signal(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Discovery {
            mesh,
            grpc_address,
            debug_address,
            secure_grpc_address,
            address_file,
            debounce,
            debounce_max,
        } => {
            let mesh = MeshConfig::load(&mesh)?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let opts = isthmus_xds::discovery::DiscoveryOptions {
                grpc_address,
                debug_address,
                secure_grpc_address: secure_grpc_address.0,
                address_file,
            };
            let push = isthmus_xds::server::PushOptions {
                debounce,
                max_delay: debounce_max.max(debounce),
            };
            runtime.block_on(isthmus_xds::discovery::run_with_push(
                mesh,
                opts,
                push,
                shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::App {
            app:
                App::Echo {
                    listen,
                    service,
                    version,
                    pod,
                    cluster,
                    status,
                },
        } => {
            let config = isthmus_apps::echo::EchoConfig {
                identity: isthmus_apps::Identity {
                    service,
                    version,
                    pod: pod.unwrap_or_else(isthmus_agent::host_name),
                    cluster,
                },
                listen,
                status,
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                let server = isthmus_apps::echo::bind(&config).await?;
                tracing::info!(addresses = ?server.local_addrs(), identity = %config.identity, "echo serving");
                server.serve(shutdown_signal()).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::App {
            app:
                App::Run {
                    image,
                    pod,
                    namespace,
                    cluster,
                    ports,
                    env,
                    labels,
                    address,
                    command,
                    args,
                },
        } => {
            let opts = isthmus_apps::run::RunOptions {
                image,
                pod: pod.unwrap_or_else(isthmus_agent::host_name),
                namespace,
                cluster,
                address,
                ports,
                env,
                labels,
                command,
                args,
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let code = runtime.block_on(isthmus_apps::run::run(&opts, shutdown_signal()))?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::CreateCacerts { out, clusters } => {
            let made = isthmus_ca::create_cacerts(&out, &clusters)?;
            let root = out.join("root-cert.pem");
            if made.new_root {
                println!(
                    "root CA: {} (its key: {}; keep it offline)",
                    root.display(),
                    out.join(isthmus_ca::ROOT_KEY).display()
                );
            } else {
                println!("root CA: {} (existing, reused)", root.display());
            }
            for dir in &made.clusters {
                println!(
                    "intermediate CA: {}/ (mesh.yaml ca.cacerts: {})",
                    dir.display(),
                    dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                Bench::Xds {
                    proxies,
                    services,
                    endpoints,
                    new_proxies,
                    pushes,
                    debounce,
                    control_plane,
                    keep,
                },
        } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let shape = isthmus_bench::xds::Shape {
                proxies,
                services,
                endpoints,
                new_proxies,
                pushes,
            };
            let opts = isthmus_bench::xds::Options {
                binary: match control_plane {
                    Some(p) => p,
                    None => std::env::current_exe().context("cannot find the isthmus binary")?,
                },
                discovery_args: debounce
                    .map(|d| vec!["--debounce".to_string(), d])
                    .unwrap_or_default(),
                keep,
            };
            print!(
                "{}",
                runtime.block_on(isthmus_bench::xds::run(&shape, &opts))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                Bench::Ca {
                    seconds,
                    agents,
                    control_plane,
                    keep,
                },
        } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let opts = isthmus_bench::ca::Options {
                binary: match control_plane {
                    Some(p) => p,
                    None => std::env::current_exe().context("cannot find the isthmus binary")?,
                },
                seconds,
                agents,
                keep,
            };
            match runtime.block_on(isthmus_bench::ca::run(&opts)) {
                Ok(report) => {
                    print!("{report}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(report) => {
                    print!("{report}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Bench {
            what: Bench::Lab { dir },
        } => {
            let istio = isthmus_lab::topology::istio_dir();
            let manifests = [
                istio.join("samples/bookinfo/platform/kube/bookinfo.yaml"),
                istio.join("samples/bookinfo/networking/bookinfo-gateway.yaml"),
            ];
            isthmus_bench::lab::run(&dir, &manifests, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
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
            let figures = isthmus_bench::registry::run(
                &isthmus_bench::registry::Shape {
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
