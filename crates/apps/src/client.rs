//! A plain HTTP/1.1 client for the stand-ins' calls to each other (`http://details:9080/…`).
//!
//! Names are resolved with the system resolver (so a pod's `/etc/hosts` applies), each
//! request opens its own connection and nothing is retried: what the caller sees is
//! exactly what one attempt got, as with the samples' own clients.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The most of an answer's body that is read.
const MAX_BODY: usize = 4 << 20;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}: expected http://HOST[:PORT][/PATH]")]
    Url(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot connect to {host} ({addr}): {source}")]
    Connect {
        host: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid request to {url}: {source}")]
    Request {
        url: String,
        source: axum::http::Error,
    },
    #[error("HTTP exchange with {url} failed: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("reading the answer from {url} failed (or it exceeds {MAX_BODY} bytes): {message}")]
    Body { url: String, message: String },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// An answer: status, headers and the whole body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as text (lossily).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// As resolved (no brackets around an IPv6 address).
    host: String,
    port: u16,
    /// As sent in `Host:`.
    authority: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, ClientError> {
    let bad = || ClientError::Url(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().map_err(|_| bad())?),
            None if after.is_empty() => (host, 80),
            None => return Err(bad()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (authority, 80),
        }
    };
    if host.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    Ok(Target {
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path,
    })
}

/// `GET url` with `headers`, giving up after `timeout` (resolution, connection and the
/// whole answer included).
pub async fn get(url: &str, headers: &HeaderMap, timeout: Duration) -> Result<Reply, ClientError> {
    send(Method::GET, url, headers, Bytes::new(), timeout).await
}

/// One request; see [`get`].
pub async fn send(
    method: Method,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    match tokio::time::timeout(timeout, exchange(method, url, headers, body)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            url: url.to_string(),
            timeout,
        }),
    }
}

async fn connect(target: &Target) -> Result<TcpStream, ClientError> {
    let addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|source| ClientError::Resolve {
            host: target.host.clone(),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(source) => last = Some((addr, source)),
        }
    }
    Err(match last {
        Some((addr, source)) => ClientError::Connect {
            host: target.host.clone(),
            addr,
            source,
        },
        None => ClientError::NoAddress {
            host: target.host.clone(),
        },
    })
}

async fn exchange(
    method: Method,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Reply, ClientError> {
    let target = parse_url(url)?;
    let stream = connect(&target).await?;
    let http = |source| ClientError::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let conn_url = url.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(url = %conn_url, error = %e, "connection ended with an error");
        }
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(target.path.as_str())
        .header(header::HOST, target.authority.as_str());
    for (name, value) in headers {
        if name != header::HOST {
            builder = builder.header(name, value);
        }
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|source| ClientError::Request {
            url: url.to_string(),
            source,
        })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| ClientError::Body {
            url: url.to_string(),
            message: e.to_string(),
        })?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, authority: &str, path: &str) -> Target {
        Target {
            host: host.into(),
            port,
            authority: authority.into(),
            path: path.into(),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://details:9080/details/0").unwrap(),
            target("details", 9080, "details:9080", "/details/0")
        );
        assert_eq!(
            parse_url("http://ratings.default.svc.cluster.local").unwrap(),
            target(
                "ratings.default.svc.cluster.local",
                80,
                "ratings.default.svc.cluster.local",
                "/"
            )
        );
        assert_eq!(
            parse_url("http://[::1]:5000?x=1").unwrap(),
            target("::1", 5000, "[::1]:5000", "/?x=1")
        );
        for bad in [
            "https://x/",
            "details:9080",
            "http://:80/",
            "http://x:port/",
            "http://u@x/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn refused_and_timeout() {
        // A port that was free a moment ago: nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/");
        let err = get(&url, &HeaderMap::new(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");

        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let err = get(&url, &HeaderMap::new(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    }
}
