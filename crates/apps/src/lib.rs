//! Stand-ins for Istio's sample applications, small enough to start by the dozen in a
//! test: each answers HTTP and says who it is, so a test (or a person with `curl`)
//! can see which workload a request reached and what it arrived with.
//!
//! - [`echo`]: answers any request with its identity, the request line and headers;
//! - [`helloworld`]: Istio's helloworld (`Hello version: v1, instance: POD`);
//! - [`bookinfo`]: Istio's Bookinfo (productpage, details, reviews v1/v2/v3, ratings);
//! - [`run`]: which of them stands in for a container image, as `isthmus app run` and
//!   `isthmus lab` start them.
//!
//! What every app shares lives here: [`Identity`] (which workload this is), [`Env`] (the
//! container's environment as the app reads it) and [`Server`] (listening on several
//! addresses, serving until told to stop). The apps call each other with [`client`].
#![forbid(unsafe_code)]

pub mod bookinfo;
pub mod client;
pub mod echo;
pub mod helloworld;
pub mod run;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// What an app can fail at; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source} (is the port taken, or the address not local?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("nothing to listen on: give at least one address")]
    NoAddress,
    #[error("invalid HTTP status {0}: expected 100..=999")]
    Status(u16),
    #[error("serving on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("a server task failed: {0}")]
    Task(String),
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("waiting for {command:?} failed: {source}")]
    Wait {
        command: String,
        source: std::io::Error,
    },
}

/// A container's environment as an app reads it: what its image sets, then what the
/// pod spec says (later settings win).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut env = Self::default();
        for (k, v) in pairs {
            env.set(k, v);
        }
        env
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Which workload an app instance is: the first line of every answer, e.g.
/// `service=reviews version=v1 pod=reviews-v1-1 cluster=cluster1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub cluster: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service={} version={} pod={} cluster={}",
            self.service, self.version, self.pod, self.cluster
        )
    }
}

impl Identity {
    /// Reads an identity line back (fields in any order, unknown ones ignored); `None`
    /// unless it has `service=`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut id = Identity::default();
        let mut has_service = false;
        for (k, v) in line.split_whitespace().filter_map(|kv| kv.split_once('=')) {
            match k {
                "service" => {
                    id.service = v.to_string();
                    has_service = true;
                }
                "version" => id.version = v.to_string(),
                "pod" => id.pod = v.to_string(),
                "cluster" => id.cluster = v.to_string(),
                _ => {}
            }
        }
        has_service.then_some(id)
    }
}

/// An app bound to its addresses, ready to serve.
pub struct Server {
    listeners: Vec<(SocketAddr, TcpListener)>,
    router: axum::Router,
}

impl Server {
    /// Binds every address (port 0 picks a free port; see [`Server::local_addrs`]).
    pub async fn bind(addrs: &[SocketAddr], router: axum::Router) -> Result<Self, Error> {
        if addrs.is_empty() {
            return Err(Error::NoAddress);
        }
        let mut listeners = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })?;
            let at = l.local_addr().unwrap_or(addr);
            listeners.push((at, l));
        }
        Ok(Self { listeners, router })
    }

    /// Where it listens, in the order the addresses were given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(a, _)| *a).collect()
    }

    /// Serves on every address until `shutdown` resolves, then lets requests in flight
    /// finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (addr, listener) in self.listeners {
            let router = self.router.clone();
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
                    .map_err(|source| Error::Serve { addr, source })
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(r) => r?,
                Err(e) => return Err(Error::Task(e.to_string())),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_line_round_trips() {
        let id = Identity {
            service: "reviews".into(),
            version: "v1".into(),
            pod: "reviews-v1-1".into(),
            cluster: "cluster1".into(),
        };
        let line = id.to_string();
        assert_eq!(
            line,
            "service=reviews version=v1 pod=reviews-v1-1 cluster=cluster1"
        );
        assert_eq!(Identity::parse(&line), Some(id));
        assert_eq!(Identity::parse("method=GET path=/"), None);
    }

    #[tokio::test]
    async fn bind_needs_an_address() {
        assert!(matches!(
            Server::bind(&[], axum::Router::new()).await,
            Err(Error::NoAddress)
        ));
    }
}
