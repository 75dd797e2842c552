//! `isthmus discovery`: the registry controller, the ADS server on gRPC, and the debug
//! HTTP API:
//!
//! - `/ready`: 200 once every cluster's registry is synced, else 503 naming those that
//!   are not.
//! - `/debug/syncz`: every connected proxy, and per type what it subscribed to, was
//!   sent, accepted or rejected.
//! - `/debug/registryz`: the registry's services, endpoints and gateways.
//! - `/debug/config_dump?proxyID=ID[&types=cds,eds,lds,rds][&names=proto]`: what a
//!   proxy receives, shaped like Envoy's admin `/config_dump`.
//! - `/debug/endpointz?address=IP`: who still holds an endpoint at `IP`, for stopping
//!   a pod gracefully. The answer is
//!   `{"address":"IP","registry":BOOL,"proxies":[{"id":"NODE_ID","acked":BOOL}]}`:
//!   `registry` says whether a service of the current registry snapshot still has an
//!   endpoint at the address; `proxies` lists every connected proxy whose last-sent or
//!   last-accepted endpoints (EDS `ClusterLoadAssignment`s) have one, with `acked`
//!   true if the config it accepted has it, false if only a config sent and not yet
//!   answered does. Once `registry` is false and `proxies` empty, no proxy sends the
//!   address new traffic from a stale endpoint.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use isthmus_model::MeshConfig;
use isthmus_registry::report::RegistryReport;
use isthmus_registry::{Address, Controller, Snapshot};
use serde::{Deserialize, Serialize};

use crate::dump;
use crate::generate::IstioGenerator;
use crate::resources::TypeUrl;
use crate::server::{DiscoveryServer, EndpointHolder, PushOptions};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "cannot listen for xDS on {addr}: {source} (is another control plane running? choose another --grpc-address)"
    )]
    GrpcBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for the debug API on {addr}: {source} (choose another --debug-address)")]
    DebugBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the bound addresses to {}: {source} (check --address-file)", path.display())]
    AddressFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot listen for xDS and the CA over TLS on {addr}: {source} (is another control plane running? choose another --secure-grpc-address, or `off`)"
    )]
    SecureBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("certificate authority: {0}")]
    Ca(#[from] isthmus_ca::CaError),
    #[error(transparent)]
    Secure(#[from] crate::secure::SecureError),
    #[error("xDS server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("debug API failed: {0}")]
    Debug(std::io::Error),
}

/// Where `isthmus discovery` listens.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    /// ADS (plaintext gRPC), Istio's 15010.
    pub grpc_address: SocketAddr,
    /// The debug API and `/ready`.
    pub debug_address: SocketAddr,
    /// xDS and the CA over TLS (Istio's 15012); `None` serves neither the CA nor TLS.
    pub secure_grpc_address: Option<SocketAddr>,
    /// Once the listeners are bound, their addresses are written here as JSON
    /// (`{"grpc": ADDR, "debug": ADDR}`), so whoever started the control plane with
    /// port 0 learns the ports it got (as Envoy's `--admin-address-path`).
    pub address_file: Option<std::path::PathBuf>,
}

/// The addresses `isthmus discovery` listens on, as written to `--address-file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundAddresses {
    pub grpc: SocketAddr,
    pub debug: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<SocketAddr>,
}

impl BoundAddresses {
    /// Reads an address file; `None` while it is not (completely) written.
    pub fn read(path: &std::path::Path) -> Option<BoundAddresses> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Writes the file whole (a temporary file renamed into place), so a reader never
    /// sees half of it.
    fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }
}

#[derive(Clone)]
struct AppState {
    mesh: Arc<MeshConfig>,
    controller: Arc<Controller>,
    server: DiscoveryServer,
}

/// Connections the xDS listener queues before they are accepted. Every proxy of a mesh
/// reconnects at once when the control plane restarts; with the usual 1,024 the queue
/// overflows at 1,000 proxies, the kernel falls back to SYN cookies, and connections
/// whose cookie fails are reset (proxies left unconfigured until they retry). The
/// kernel caps it at `net.core.somaxconn`.
const GRPC_BACKLOG: u32 = 8192;

/// Binds the xDS listener with a backlog for a whole mesh reconnecting.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(GRPC_BACKLOG)
}

/// Runs until `shutdown` resolves, with the default push debounce.
pub async fn run(
    mesh: MeshConfig,
    opts: DiscoveryOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DiscoveryError> {
    run_with_push(mesh, opts, PushOptions::default(), shutdown).await
}

/// Runs until `shutdown` resolves, gathering registry changes into pushes as `push` says.
pub async fn run_with_push(
    mesh: MeshConfig,
    opts: DiscoveryOptions,
    push: PushOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DiscoveryError> {
    let grpc = listen(opts.grpc_address).map_err(|source| DiscoveryError::GrpcBind {
        addr: opts.grpc_address,
        source,
    })?;
    let debug = tokio::net::TcpListener::bind(opts.debug_address)
        .await
        .map_err(|source| DiscoveryError::DebugBind {
            addr: opts.debug_address,
            source,
        })?;
    let secure = match opts.secure_grpc_address {
        Some(addr) => {
            Some(listen(addr).map_err(|source| DiscoveryError::SecureBind { addr, source })?)
        }
        None => None,
    };
    if let Some(path) = &opts.address_file {
        let bound = BoundAddresses {
            grpc: grpc.local_addr().unwrap_or(opts.grpc_address),
            debug: debug.local_addr().unwrap_or(opts.debug_address),
            secure: secure.as_ref().and_then(|l| l.local_addr().ok()),
        };
        bound
            .write(path)
            .map_err(|source| DiscoveryError::AddressFile {
                path: path.clone(),
                source,
            })?;
    }
    serve(
        mesh,
        Listeners {
            grpc,
            debug,
            secure,
        },
        push,
        shutdown,
    )
    .await
}

/// The control plane's listeners, bound by the caller (a test binds port 0 and passes
/// the listener itself, so no other process can take the port in between).
pub struct Listeners {
    /// ADS (plaintext gRPC).
    pub grpc: tokio::net::TcpListener,
    /// The debug API and `/ready`.
    pub debug: tokio::net::TcpListener,
    /// xDS and the CA over TLS (Istio's 15012), if served.
    pub secure: Option<tokio::net::TcpListener>,
}

/// Serves on listeners already bound until `shutdown` resolves.
pub async fn serve(
    mesh: MeshConfig,
    listeners: Listeners,
    push: PushOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DiscoveryError> {
    let Listeners {
        grpc,
        debug,
        secure,
    } = listeners;
    // The CA and the TLS identity first: a broken cacerts directory stops start-up
    // with its message before anything serves.
    let secure = match secure {
        Some(listener) => Some((listener, SecureParts::load(&mesh)?)),
        None => None,
    };
    let controller = Arc::new(Controller::start(&mesh));
    let generator = Arc::new(IstioGenerator::for_mesh(&mesh));
    let server = DiscoveryServer::with_options(controller.watch(), generator, push);
    // Only for the log line: a listener whose address cannot be read still serves.
    let at = |l: &tokio::net::TcpListener| l.local_addr().map_or("?".into(), |a| a.to_string());
    let (grpc_at, debug_at) = (at(&grpc), at(&debug));
    tracing::info!(grpc = %grpc_at, debug = %debug_at, clusters = mesh.clusters.len(), debounce = ?push.debounce, debounce_max = ?push.max_delay, "discovery serving");
    let state = AppState {
        mesh: Arc::new(mesh),
        controller,
        server: server.clone(),
    };
    let app = axum::Router::new()
        .route("/ready", get(ready))
        .route("/debug/syncz", get(syncz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/endpointz", get(endpointz))
        .with_state(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_http = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(debug, app)
            .with_graceful_shutdown(async move {
                let _ = stop_http.wait_for(|s| *s).await;
            })
            .await
    });
    let secure = secure.map(|(listener, parts)| {
        let mut stop = stop_rx.clone();
        let ads = server.service();
        tokio::spawn(async move {
            let _rotation = AbortOnDrop(parts.identity.rotate(parts.ca.clone()));
            tonic::transport::Server::builder()
                .add_service(ads)
                .add_service(isthmus_ca::CaService::new(parts.ca, parts.verifier).server())
                .serve_with_incoming_shutdown(parts.identity.incoming(listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    });
    let mut stop_grpc = stop_rx;
    tonic::transport::Server::builder()
        .add_service(server.service())
        .serve_with_incoming_shutdown(
            // Responses go out as soon as they are written (no Nagle delay behind an
            // unacknowledged earlier one), as every gRPC server does.
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                |conn| {
                    conn.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                },
            ),
            async move {
                let _ = stop_grpc.wait_for(|s| *s).await;
            },
        )
        .await?;
    if let Some(secure) = secure {
        match secure.await {
            Ok(r) => r?,
            Err(e) => return Err(DiscoveryError::Debug(std::io::Error::other(e.to_string()))),
        }
    }
    match http.await {
        Ok(r) => r.map_err(DiscoveryError::Debug),
        Err(e) => Err(DiscoveryError::Debug(std::io::Error::other(e.to_string()))),
    }
}

/// What 15012 serves with: the CA, who may use it, and the control plane's certificate.
struct SecureParts {
    ca: Arc<isthmus_ca::CertificateAuthority>,
    verifier: Arc<isthmus_ca::TokenVerifier>,
    identity: crate::secure::TlsIdentity,
}

impl SecureParts {
    fn load(mesh: &MeshConfig) -> Result<Self, DiscoveryError> {
        let ca = Arc::new(isthmus_ca::authority_for_mesh(mesh)?);
        let verifier = Arc::new(isthmus_ca::verifier_for_mesh(mesh)?);
        let identity = crate::secure::TlsIdentity::issue(
            &ca,
            crate::secure::dns_names(&mesh.system_namespace),
            mesh.workload_cert_ttl(),
        )?;
        tracing::info!(source = ?ca.source(), roots = ca.roots().len(), trust_domain = ca.trust_domain(), "certificate authority ready");
        Ok(SecureParts {
            ca,
            verifier,
            identity,
        })
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let snap = s.controller.snapshot();
    let waiting: Vec<String> = snap
        .sync
        .iter()
        .filter(|(_, st)| **st != isthmus_registry::SyncState::Synced)
        .map(|(c, st)| {
            format!(
                "{c}: {}",
                serde_json::to_value(st)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            )
        })
        .collect();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready; clusters not synced: {}\n", waiting.join(", ")),
        )
    }
}

async fn syncz(State(s): State<AppState>) -> impl IntoResponse {
    Json(s.server.statuses())
}

async fn registryz(State(s): State<AppState>) -> impl IntoResponse {
    Json(RegistryReport::new(&s.mesh, &s.controller.snapshot()))
}

#[derive(Deserialize)]
struct DumpQuery {
    #[serde(rename = "proxyID")]
    proxy_id: String,
    /// Comma-separated sections to show: `cds`, `eds`, `lds`, `rds`; all if absent.
    types: Option<String>,
    /// `proto`: snake_case field names, as Envoy's admin `/config_dump` prints them
    /// (default `json`: canonical proto3 JSON, lowerCamelCase).
    names: Option<String>,
}

/// What the proxy receives, shaped like Envoy's admin `/config_dump`.
async fn config_dump(
    State(s): State<AppState>,
    Query(q): Query<DumpQuery>,
) -> axum::response::Response {
    let types = match &q.types {
        None => None,
        Some(list) => {
            let wanted: BTreeSet<String> = list
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect();
            let known: Vec<&str> = TypeUrl::ALL.iter().map(|t| t.short()).collect();
            if let Some(bad) = wanted.iter().find(|t| !known.contains(&t.as_str())) {
                return (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown type {bad:?} in types=; known: {}\n",
                        known.join(",")
                    ),
                )
                    .into_response();
            }
            Some(wanted)
        }
    };
    let proto_names = match q.names.as_deref() {
        None | Some("json") => false,
        Some("proto") => true,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown names={other:?}; known: json (lowerCamelCase), proto (snake_case)\n"
                ),
            )
                .into_response();
        }
    };
    let Some((_proxy, res)) = s.server.config_for(&q.proxy_id) else {
        let known: Vec<String> = s
            .server
            .statuses()
            .into_iter()
            .filter_map(|c| c.proxy.map(|p| p.id))
            .collect();
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no connected proxy {:?}; connected: {known:?}\n",
                q.proxy_id
            ),
        )
            .into_response();
    };
    let opts = dump::DumpOptions {
        versions: true,
        types,
        proto_names,
    };
    Json(dump::config_dump_with(&res, &opts)).into_response()
}

/// Who holds an endpoint address: the answer of `/debug/endpointz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointHolders {
    pub address: IpAddr,
    /// Whether a service of the registry snapshot has an endpoint at the address.
    pub registry: bool,
    /// The connected proxies whose endpoints, sent or accepted, have it.
    pub proxies: Vec<EndpointHolder>,
}

/// Who holds an endpoint at `ip`: the registry (`snapshot`), and the proxies
/// connected to `server`.
pub fn endpoint_holders(
    snapshot: &Snapshot,
    server: &DiscoveryServer,
    ip: IpAddr,
) -> EndpointHolders {
    let registry = snapshot
        .services
        .values()
        .any(|svc| svc.endpoints().any(|e| e.address == Address::Ip(ip)));
    EndpointHolders {
        address: ip,
        registry,
        proxies: server.endpoint_holders(ip),
    }
}

#[derive(Deserialize)]
struct EndpointzQuery {
    address: Option<String>,
}

async fn endpointz(
    State(s): State<AppState>,
    Query(q): Query<EndpointzQuery>,
) -> axum::response::Response {
    let Some(Ok(ip)) = q.address.as_deref().map(str::parse::<IpAddr>) else {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "address={:?} is not an IP address; ask for /debug/endpointz?address=IP\n",
                q.address.unwrap_or_default()
            ),
        )
            .into_response();
    };
    Json(endpoint_holders(&s.controller.snapshot(), &s.server, ip)).into_response()
}
