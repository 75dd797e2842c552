//! The isthmus agent: what pilot-agent does for an Istio proxy.
//!
//! - [`bootstrap`]: Envoy's bootstrap, a pure function of [`AgentConfig`]: the node id
//!   (`sidecar~IP~POD.NS~NS.svc.DOMAIN`, gateways `router~…`), node metadata (CLUSTER_ID,
//!   NETWORK, MESH_ID, … and `ISTIO_META_*` variables), ADS to the control plane over
//!   the static `xds-grpc` cluster, and the admin interface on loopback.
//! - [`Agent`]: writes the bootstrap, runs Envoy as a child and restarts it with
//!   exponential backoff when it exits on its own, passes its output on as tracing
//!   events (target `envoy`), serves `GET /healthz/ready`, and on shutdown drains
//!   Envoy's listeners before stopping it.
//!
//! The Envoy binary is `--envoy`, else `$ISTHMUS_ENVOY`, else the `.venv` that
//! `scripts/envoy.sh` installs it into, in the checkout above the running binary or
//! the current directory, else `envoy` on `PATH` ([`envoy::find`], the one search).
#![forbid(unsafe_code)]

pub mod bootstrap;
mod config;
pub mod envoy;
mod error;
pub mod http;
pub mod identity;
pub mod readiness;
pub mod sds;
mod supervisor;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    AgentConfig, DEFAULT_ADMIN_PORT, DEFAULT_DISCOVERY_PORT, DEFAULT_DRAIN, DEFAULT_READINESS_PORT,
    DiscoveryAddress, ISTIO_META_PREFIX, ISTIO_METAJSON_PREFIX, ProxyKind, host_name, parse_labels,
};
pub use error::Error;
/// The file in the config directory where Envoy writes its admin address
/// (`--admin-address-path`).
pub const ADMIN_ADDRESS_FILE: &str = "admin-address";

pub use supervisor::{BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_RESET_AFTER, Backoff, EnvoyStatus};

use readiness::ReadinessState;
use supervisor::Supervisor;

/// A running agent: Envoy under supervision and the readiness endpoint. Stop it with
/// [`Agent::shutdown`]; dropping it kills Envoy at once.
pub struct Agent {
    shutdown: watch::Sender<bool>,
    supervisor: Option<JoinHandle<Result<(), Error>>>,
    readiness: Option<JoinHandle<()>>,
    status: watch::Receiver<EnvoyStatus>,
    envoy_binary: PathBuf,
    bootstrap_path: PathBuf,
    configured_admin: SocketAddr,
    readiness_address: SocketAddr,
    /// The workload certificate, once the CA issued one.
    certs: watch::Receiver<Option<Arc<identity::WorkloadCertificate>>>,
    sds_socket: Option<PathBuf>,
    /// The SDS server and the certificate keeper, stopped with the agent.
    identity_tasks: Vec<JoinHandle<()>>,
    /// The default config directory, removed when the agent goes.
    _temp_dir: Option<tempfile::TempDir>,
    /// The SDS socket's directory, removed when the agent goes.
    _sds_dir: Option<tempfile::TempDir>,
}

impl Agent {
    /// Writes the bootstrap, binds the readiness port, starts Envoy, and returns once
    /// Envoy's process is running (not yet ready: see [`readiness::check`]).
    pub async fn start(mut config: AgentConfig) -> Result<Agent, Error> {
        // The SDS socket: a short path (a socket path holds at most 107 bytes).
        let mut sds_dir = None;
        if config.identity.is_some() && config.sds_socket.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("isthmus-sds-")
                .tempdir()
                .map_err(|source| Error::WriteBootstrap {
                    path: std::env::temp_dir(),
                    source,
                })?;
            config.sds_socket = Some(dir.path().join("socket"));
            sds_dir = Some(dir);
        }
        let bootstrap = bootstrap::bootstrap_json(&config)?;
        let envoy_binary = envoy::locate(config.envoy_binary.as_deref()).await?;

        let (dir, temp_dir) = match &config.config_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("isthmus-agent-")
                    .tempdir()
                    .map_err(|source| Error::WriteBootstrap {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let bootstrap_path = dir.join(bootstrap::BOOTSTRAP_FILE);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&bootstrap_path, bootstrap))
            .map_err(|source| Error::WriteBootstrap {
                path: bootstrap_path.clone(),
                source,
            })?;

        let readiness_address =
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), config.readiness_port);
        let listener = tokio::net::TcpListener::bind(readiness_address)
            .await
            .map_err(|source| Error::ReadinessBind {
                address: readiness_address,
                source,
            })?;
        let readiness_address = listener.local_addr().unwrap_or(readiness_address);

        // The certificate first: Envoy asks for it over SDS as soon as it starts.
        let (cert_tx, certs) = watch::channel(None);
        let mut identity_tasks = Vec::new();
        if let (Some(identity), Some(socket)) = (&config.identity, &config.sds_socket) {
            let server = sds::SdsServer::new(certs.clone());
            identity_tasks.push(
                server
                    .serve(socket)
                    .map_err(|source| Error::WriteBootstrap {
                        path: socket.clone(),
                        source,
                    })?,
            );
            identity_tasks.push(tokio::spawn(identity::keep_certificate(
                identity.clone(),
                config.cluster_id.clone(),
                config.namespace.clone(),
                config.service_account.clone(),
                cert_tx,
            )));
        }
        let draining = Arc::new(AtomicBool::new(false));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (status_tx, status) = watch::channel(EnvoyStatus::default());
        let admin_address_path = dir.join(ADMIN_ADDRESS_FILE);
        let supervisor = Supervisor {
            envoy: envoy_binary.clone(),
            args: envoy::args(&bootstrap_path, &admin_address_path, config.drain_duration),
            admin: config.admin_address,
            admin_address_path,
            drain: config.drain_duration,
            status: status_tx,
            draining: draining.clone(),
        };
        let first = supervisor.spawn().await?;
        let admin_address = status.borrow().admin.unwrap_or(config.admin_address);
        tracing::info!(
            pid = status.borrow().pid,
            envoy = %envoy_binary.display(),
            bootstrap = %bootstrap_path.display(),
            node = %bootstrap::node_id(&config),
            admin = %admin_address,
            readiness = %readiness_address,
            "Envoy started"
        );

        let app = readiness::router(ReadinessState {
            envoy: status.clone(),
            draining,
            certs: certs.clone(),
        });
        let readiness = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the readiness server stopped");
            }
        });
        let supervisor = tokio::spawn(supervisor.run(first, shutdown_rx));
        Ok(Agent {
            shutdown,
            supervisor: Some(supervisor),
            readiness: Some(readiness),
            status,
            envoy_binary,
            bootstrap_path,
            configured_admin: config.admin_address,
            readiness_address,
            certs,
            identity_tasks,
            sds_socket: config.sds_socket.clone(),
            _temp_dir: temp_dir,
            _sds_dir: sds_dir,
        })
    }

    /// The SDS socket Envoy reads its certificates from (with an identity).
    pub fn sds_socket(&self) -> Option<&Path> {
        self.sds_socket.as_deref()
    }

    /// The workload certificate the agent holds now, if the CA issued one.
    pub fn certificate(&self) -> Option<Arc<identity::WorkloadCertificate>> {
        self.certs.borrow().clone()
    }

    /// The workload certificate, to wait on changes.
    pub fn watch_certificate(&self) -> watch::Receiver<Option<Arc<identity::WorkloadCertificate>>> {
        self.certs.clone()
    }

    /// Envoy's state now: its pid, restarts, and how it last exited.
    pub fn status(&self) -> EnvoyStatus {
        self.status.borrow().clone()
    }

    /// Envoy's state, to wait on changes.
    pub fn watch_status(&self) -> watch::Receiver<EnvoyStatus> {
        self.status.clone()
    }

    /// The running Envoy's process id (`None` between a crash and its restart).
    pub fn envoy_pid(&self) -> Option<u32> {
        self.status.borrow().pid
    }

    /// The Envoy binary in use.
    pub fn envoy_binary(&self) -> &Path {
        &self.envoy_binary
    }

    /// Where the bootstrap was written.
    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap_path
    }

    /// Envoy's admin address: the running Envoy's (the port it chose when the
    /// configured port is 0), else the configured one.
    pub fn admin_address(&self) -> SocketAddr {
        self.status.borrow().admin.unwrap_or(self.configured_admin)
    }

    /// Where `GET /healthz/ready` is served.
    pub fn readiness_address(&self) -> SocketAddr {
        self.readiness_address
    }

    /// Drains Envoy's listeners (`POST /drain_listeners?graceful`), waits the drain
    /// time, stops Envoy with SIGTERM and waits for it; readiness answers 503 from the
    /// start of the drain.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        let result = self.supervisor_stopped().await;
        if let Some(readiness) = self.readiness.take() {
            readiness.abort();
        }
        for task in self.identity_tasks.drain(..) {
            task.abort();
        }
        result
    }

    /// Waits for the supervisor to end; it only ends on shutdown, so this returning on
    /// its own means the agent failed.
    async fn supervisor_stopped(&mut self) -> Result<(), Error> {
        let Some(task) = self.supervisor.as_mut() else {
            return Ok(());
        };
        let result = task.await;
        self.supervisor = None;
        result.map_err(|e| Error::Supervisor(e.to_string()))?
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(task) = self.supervisor.take() {
            // Aborting drops the child (kill_on_drop); the signal makes it immediate.
            task.abort();
            if let Some(pid) = self.status.borrow().pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(readiness) = self.readiness.take() {
            readiness.abort();
        }
        for task in self.identity_tasks.drain(..) {
            task.abort();
        }
    }
}

/// Runs an agent until SIGTERM or SIGINT, then shuts it down gracefully
/// (what `isthmus agent` does).
pub async fn run_until_signal(config: AgentConfig) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals =
        |kind| signal(kind).map_err(|e| Error::Supervisor(format!("cannot handle signals: {e}")));
    let mut term = signals(SignalKind::terminate())?;
    let mut int = signals(SignalKind::interrupt())?;
    let mut agent = Agent::start(config).await?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining and stopping Envoy"),
        _ = int.recv() => tracing::info!("SIGINT: draining and stopping Envoy"),
        result = agent.supervisor_stopped() => return result,
    }
    agent.shutdown().await
}
