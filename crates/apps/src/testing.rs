//! Helpers for this crate's tests: serve a router on a free loopback port, call it, and
//! record what an upstream received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;

use crate::bookinfo::reviews::ReviewsConfig;
use crate::client::{self, Reply};
use crate::{Env, Server};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `router` on 127.0.0.1 (a free port) until the returned sender is dropped;
/// gives its base URL, `http://127.0.0.1:PORT`.
pub async fn serve(router: axum::Router) -> (String, tokio::sync::oneshot::Sender<()>) {
    let server = Server::bind(&[SocketAddr::from(([127, 0, 0, 1], 0))], router)
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

/// A base URL where nothing listens.
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// `GET url` with `headers`.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    client::get(url, &header_map(headers), TIMEOUT)
        .await
        .unwrap()
}

/// `GET url`: (status, body).
pub async fn get_text(url: &str) -> (u16, String) {
    let r = get(url, &[]).await;
    (r.status.as_u16(), r.text())
}

/// `GET url` with `headers`: (status, body as JSON).
pub async fn get_json(url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let r = get(url, headers).await;
    let json = r
        .json()
        .unwrap_or_else(|| panic!("not JSON from {url}: {}", r.text()));
    (r.status.as_u16(), json)
}

/// `POST url` with a body of `content_type` and `headers`.
pub async fn post(url: &str, content_type: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut map = header_map(headers);
    map.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    client::send(Method::POST, url, &map, body.to_string().into(), TIMEOUT)
        .await
        .unwrap()
}

/// A request an upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

/// Records the requests a router receives.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    /// `router`, recording every request before answering it.
    pub fn wrap(&self, router: axum::Router) -> axum::Router {
        let log = self.0.clone();
        router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(Seen {
                        path: req.uri().path().to_string(),
                        headers: req.headers().clone(),
                    });
                    next.run(req).await
                }
            },
        ))
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request recorded")
    }
}

/// reviews `version` as its image configures it, pod `reviews-VERSION-1` in `cluster1`,
/// calling ratings at `ratings_url`.
pub fn reviews_config(version: &str, ratings_url: &str) -> ReviewsConfig {
    let env = Env::from_pairs([
        ("SERVICE_VERSION", version),
        (
            "ENABLE_RATINGS",
            if version == "v1" { "false" } else { "true" },
        ),
        ("STAR_COLOR", if version == "v3" { "red" } else { "black" }),
        ("HOSTNAME", format!("reviews-{version}-1").as_str()),
        ("CLUSTER_NAME", "cluster1"),
    ]);
    ReviewsConfig {
        ratings_url: ratings_url.to_string(),
        ..ReviewsConfig::from_env(&env)
    }
}
