//! `echo`: answers every request with who it is and what it received.
//!
//! ```text
//! service=reviews version=v1 pod=reviews-v1-1 cluster=cluster1
//! method=GET path=/reviews/0
//! query=status=503                 (only when the request has a query)
//! body-bytes=12                    (only when the request has a body)
//! header: host=reviews:9080
//! header: user-agent=curl/7.88.1
//! ```
//!
//! The status is `--status` (default 200) unless the request's `?status=N` says
//! otherwise; a malformed `?status=` answers 400 with an `error=` line.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::{Error, Identity, Server};

/// The most of a request body that is read (and counted); larger bodies answer 413.
const MAX_BODY: usize = 1 << 20;

/// What `isthmus app echo` is told.
#[derive(Clone, Debug)]
pub struct EchoConfig {
    pub identity: Identity,
    /// Every address to listen on.
    pub listen: Vec<SocketAddr>,
    /// The status of every answer unless `?status=N` overrides it.
    pub status: u16,
}

struct Echo {
    identity: Identity,
    status: StatusCode,
}

/// A status code from a number, as `--status` and `?status=` give it.
pub fn status_code(n: u16) -> Result<StatusCode, Error> {
    StatusCode::from_u16(n).map_err(|_| Error::Status(n))
}

/// The echo app as a router, to serve or to nest in another app.
pub fn router(identity: Identity, status: StatusCode) -> axum::Router {
    axum::Router::new()
        .fallback(echo)
        .with_state(Arc::new(Echo { identity, status }))
}

/// Binds every `--listen` address.
pub async fn bind(config: &EchoConfig) -> Result<Server, Error> {
    let status = status_code(config.status)?;
    Server::bind(&config.listen, router(config.identity.clone(), status)).await
}

/// The `status` query parameter: `None` if absent, `Some(Err(raw))` if malformed.
fn status_param(query: Option<&str>) -> Option<Result<StatusCode, String>> {
    let raw = query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == "status")
        .map(|(_, v)| v)?;
    Some(
        raw.parse::<u16>()
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
            .ok_or_else(|| raw.to_string()),
    )
}

/// The answer's body: identity, request line, query, body size and headers.
pub fn render(
    identity: &Identity,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_bytes: usize,
) -> String {
    let mut out = format!("{identity}\nmethod={method} path={}\n", uri.path());
    if let Some(q) = uri.query().filter(|q| !q.is_empty()) {
        out.push_str(&format!("query={q}\n"));
    }
    if body_bytes > 0 {
        out.push_str(&format!("body-bytes={body_bytes}\n"));
    }
    for (name, value) in headers {
        out.push_str(&format!(
            "header: {}={}\n",
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    out
}

async fn echo(State(app): State<Arc<Echo>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (mut status, error) = match status_param(parts.uri.query()) {
        None => (app.status, None),
        Some(Ok(s)) => (s, None),
        Some(Err(raw)) => (
            StatusCode::BAD_REQUEST,
            Some(format!(
                "error=invalid status {raw:?}: expected 100..=999\n"
            )),
        ),
    };
    let body_bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b.len(),
        Err(_) => {
            status = StatusCode::PAYLOAD_TOO_LARGE;
            0
        }
    };
    let mut text = render(
        &app.identity,
        &parts.method,
        &parts.uri,
        &parts.headers,
        body_bytes,
    );
    if let Some(e) = error {
        text.push_str(&e);
    }
    tracing::debug!(method = %parts.method, uri = %parts.uri, status = status.as_u16(), "echo");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(text),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn identity() -> Identity {
        Identity {
            service: "reviews".into(),
            version: "v1".into(),
            pod: "reviews-v1-1".into(),
            cluster: "cluster1".into(),
        }
    }

    /// Starts echo on two free loopback ports; stops when the sender is dropped.
    async fn start(status: u16) -> (Vec<SocketAddr>, tokio::sync::oneshot::Sender<()>) {
        let config = EchoConfig {
            identity: identity(),
            listen: vec![
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SocketAddr::from(([127, 0, 0, 1], 0)),
            ],
            status,
        };
        let server = bind(&config).await.unwrap();
        let addrs = server.local_addrs();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        (addrs, tx)
    }

    /// One HTTP/1.1 request over a fresh connection: (status, body).
    async fn request(addr: SocketAddr, raw: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    fn get(path: &str, extra: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: reviews:9080\r\n{extra}Connection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn answers_with_identity_request_and_headers_on_every_address() {
        let (addrs, _stop) = start(200).await;
        for addr in addrs {
            let (status, body) = request(addr, &get("/x", "End-User: jason\r\n")).await;
            assert_eq!(status, 200);
            let lines: Vec<&str> = body.lines().collect();
            assert_eq!(
                lines[..2],
                [
                    "service=reviews version=v1 pod=reviews-v1-1 cluster=cluster1",
                    "method=GET path=/x"
                ]
            );
            assert!(lines.contains(&"header: host=reviews:9080"), "{body}");
            assert!(lines.contains(&"header: end-user=jason"), "{body}");
            assert_eq!(Identity::parse(lines[0]), Some(identity()));
        }
    }

    #[tokio::test]
    async fn status_flag_and_query_override() {
        let (addrs, _stop) = start(503).await;
        let (status, body) = request(addrs[0], &get("/", "")).await;
        assert_eq!(status, 503);
        assert!(body.starts_with("service=reviews "), "{body}");
        let (status, body) = request(addrs[0], &get("/a?x=1&status=418", "")).await;
        assert_eq!(status, 418);
        assert!(body.contains("\nquery=x=1&status=418\n"), "{body}");
        let (status, body) = request(addrs[0], &get("/?status=abc", "")).await;
        assert_eq!(status, 400);
        assert!(body.contains("error=invalid status \"abc\""), "{body}");
    }

    #[tokio::test]
    async fn any_method_and_body_size() {
        let (addrs, _stop) = start(200).await;
        let raw = "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let (status, body) = request(addrs[0], raw).await;
        assert_eq!(status, 200);
        assert!(body.contains("\nmethod=POST path=/submit\n"), "{body}");
        assert!(body.contains("\nbody-bytes=5\n"), "{body}");
    }

    #[test]
    fn status_param_parsing() {
        assert_eq!(status_param(None), None);
        assert_eq!(status_param(Some("a=1")), None);
        assert_eq!(
            status_param(Some("status=500")),
            Some(Ok(StatusCode::INTERNAL_SERVER_ERROR))
        );
        assert_eq!(status_param(Some("status=42")), Some(Err("42".into())));
        assert_eq!(status_param(Some("status")), Some(Err(String::new())));
        assert!(status_code(1000).is_err());
    }
}
