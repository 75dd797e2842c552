//! A small blocking HTTP/1.1 client for what the lab asks inside pods (readiness,
//! the control plane's debug API, `lab load`): one request per connection, no
//! redirects, no retries, bounded in time and size. Run it on a thread inside a pod's
//! network namespace ([`crate::runtime::PodNetns`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The most of an answer that is read.
const MAX_RESPONSE: usize = 4 << 20;

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where a URL points: `http://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub host: String,
    pub port: u16,
    /// As sent in `Host:`.
    pub authority: String,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, &'static str> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| "the port is not a number")?),
            None => (authority, 80),
        };
        if host.is_empty() || host.contains(['@', '[', ']']) {
            return Err("the host is empty or not a name or IPv4 address");
        }
        Ok(Url {
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
        })
    }
}

/// `GET path` from `addr` with `Host: host`, everything within `timeout`.
pub(crate) fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?)?;
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(left()?))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: isthmus-lab\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(io::Error::other("the answer is too large"));
                }
                if complete(&raw) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            Err(e) => return Err(e),
        }
    }
    parse(&raw)
}

/// Whether `raw` holds a whole answer with a Content-Length (the server may keep the
/// connection open a moment after it).
fn complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| raw.len() >= end + 4 + len)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn parse(raw: &[u8]) -> io::Result<Response> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("the answer ended inside its header"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no HTTP status line"))?;
    let mut body = raw[end + 4..].to_vec();
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or_else(|| bad("a broken chunked body"))?;
    } else if let Some(len) = header(&head, "content-length").and_then(|v| v.parse().ok()) {
        if body.len() < len {
            return Err(bad("the answer ended inside its body"));
        }
        body.truncate(len);
    }
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls() {
        let u = Url::parse("http://reviews:9080/reviews/0").unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.authority.as_str(),
                u.path.as_str()
            ),
            ("reviews", 9080, "reviews:9080", "/reviews/0")
        );
        let u = Url::parse("http://198.19.0.10?x=1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/?x=1"));
        for bad in [
            "https://x/",
            "x:80",
            "http://:80/",
            "http://x:p/",
            "http://u@x/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_with_length_chunks_or_until_close() {
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA").unwrap(),
            Response {
                status: 200,
                body: b"ok".to_vec()
            }
        );
        assert_eq!(
            parse(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n")
                .unwrap()
                .body,
            b"abcd"
        );
        assert_eq!(
            parse(b"HTTP/1.0 503 x\r\n\r\nno length").unwrap().body,
            b"no length"
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok").is_err());
        assert!(parse(b"garbage").is_err());
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"));
    }

    #[test]
    fn a_request_against_a_real_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).unwrap();
            let req = String::from_utf8_lossy(&req[..n]).into_owned();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap();
            // Keeps the connection open: the client stops at Content-Length.
            std::thread::sleep(Duration::from_millis(500));
            req
        });
        let r = get(addr, "svc:80", "/x", Duration::from_secs(2)).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"hello".as_slice()));
        let req = server.join().unwrap();
        assert!(
            req.starts_with("GET /x HTTP/1.1\r\nHost: svc:80\r\n"),
            "{req}"
        );

        // Nothing listens: an error, quickly.
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(get(free, "x", "/", Duration::from_secs(2)).is_err());
    }
}
