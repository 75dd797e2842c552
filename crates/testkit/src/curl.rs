//! HTTP from inside a namespace with the system `curl`: one process for many
//! requests (curl takes several URLs and writes `-w` after each transfer).

use std::time::Duration;

use crate::netns::Netns;

/// What `-w` writes after each transfer: status, curl's exit code, its error.
const MARK: &str = "\n@@isthmus-testkit-curl@@ ";
const WRITE_OUT: &str = "\n@@isthmus-testkit-curl@@ %{http_code} %{exitcode} %{errormsg}\n";

/// One or more requests for one curl process.
#[derive(Clone, Debug)]
pub struct Curl {
    urls: Vec<String>,
    headers: Vec<String>,
    resolve: Vec<String>,
    method: Option<String>,
    timeout: Duration,
}

/// One transfer's result. A transfer that got no answer has status 0 and an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// curl's message when the transfer failed (connection refused, timeout, …).
    pub error: Option<String>,
}

impl Reply {
    /// The first line of the body (the echo app's identity line).
    pub fn first_line(&self) -> &str {
        self.body.lines().next().unwrap_or_default()
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(f, "no answer: {e}"),
            None => write!(f, "{} {:?}", self.status, self.first_line()),
        }
    }
}

impl Curl {
    /// A GET of `url`; 2 s per transfer.
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            headers: Vec::new(),
            resolve: Vec::new(),
            method: None,
            timeout: Duration::from_secs(2),
        }
    }

    /// Another URL, in the same process (and connection, where curl can reuse it).
    pub fn and(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Every URL `n` times over.
    pub fn times(mut self, n: usize) -> Self {
        let urls = std::mem::take(&mut self.urls);
        self.urls = (0..n).flat_map(|_| urls.iter().cloned()).collect();
        self
    }

    /// A request header, `Name: value`, sent with every URL.
    pub fn header(mut self, header: impl Into<String>) -> Self {
        self.headers.push(header.into());
        self
    }

    /// `--resolve HOST:PORT:ADDR`: connect there for `http://HOST:PORT/…` (which
    /// sets the Host header to `HOST:PORT`).
    pub fn resolve(mut self, host_port_addr: impl Into<String>) -> Self {
        self.resolve.push(host_port_addr.into());
        self
    }

    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// The limit for each transfer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// curl's arguments.
    pub fn args(&self) -> Vec<String> {
        let secs = format!("{:.3}", self.timeout.as_secs_f64());
        let mut args = vec![
            "-s".to_string(),
            "--max-time".into(),
            secs.clone(),
            "--connect-timeout".into(),
            secs,
            "-w".into(),
            WRITE_OUT.into(),
        ];
        for r in &self.resolve {
            args.extend(["--resolve".into(), r.clone()]);
        }
        for h in &self.headers {
            args.extend(["-H".into(), h.clone()]);
        }
        if let Some(m) = &self.method {
            args.extend(["-X".into(), m.clone()]);
        }
        args.extend(self.urls.iter().cloned());
        args
    }

    /// Runs curl in `ns`: one reply per URL, in order. Panics (with the namespace's
    /// logs) if curl cannot run or its output makes no sense.
    pub fn send(&self, ns: &Netns) -> Vec<Reply> {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ns.run("curl", &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let replies = parse(&stdout);
        if replies.len() != self.urls.len() {
            ns.fail(format_args!(
                "curl gave {} results for {} URLs ({}): stderr {:?}",
                replies.len(),
                self.urls.len(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        replies
    }

    /// The single reply of a one-URL request.
    pub fn send_one(&self, ns: &Netns) -> Reply {
        self.send(ns).remove(0)
    }
}

/// Splits curl's output into replies.
fn parse(out: &str) -> Vec<Reply> {
    let mut replies = Vec::new();
    let mut rest = out;
    while let Some(at) = rest.find(MARK) {
        let body = &rest[..at];
        let after = &rest[at + MARK.len()..];
        let (line, next) = after.split_once('\n').unwrap_or((after, ""));
        let mut fields = line.splitn(3, ' ');
        let status = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let exit: u32 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let message = fields.next().unwrap_or_default().trim();
        replies.push(Reply {
            status,
            body: body.to_string(),
            error: (exit != 0).then(|| format!("curl exit {exit}: {message}")),
        });
        rest = next;
    }
    replies
}

impl Netns {
    /// `GET url` with extra headers (`Name: value`): (status, body); status 0 (and
    /// curl's error as the body) when there was no answer.
    pub fn curl(&self, url: &str, headers: &[&str]) -> (u16, String) {
        let req = headers.iter().fold(Curl::get(url), |req, h| req.header(*h));
        let r = req.send_one(self);
        match r.error {
            Some(e) => (0, e),
            None => (r.status, r.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bodies_and_failures() {
        let out = format!(
            "service=a\nx\n{MARK}200 0 \n{MARK}000 7 Failed to connect\nno newline{MARK}404 0 \n"
        );
        let r = parse(&out);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].status, 200);
        assert_eq!(r[0].body, "service=a\nx\n");
        assert_eq!(r[0].first_line(), "service=a");
        assert_eq!(r[0].error, None);
        assert_eq!(r[1].status, 0);
        assert_eq!(r[1].body, "");
        assert_eq!(
            r[1].error.as_deref(),
            Some("curl exit 7: Failed to connect")
        );
        assert_eq!(r[2].status, 404);
        assert_eq!(r[2].body, "no newline");
    }

    #[test]
    fn args_repeat_urls_and_carry_headers() {
        let c = Curl::get("http://reviews:9080/")
            .resolve("reviews:9080:198.18.10.1")
            .header("end-user: jason")
            .times(3);
        let args = c.args();
        assert_eq!(
            args.iter().filter(|a| *a == "http://reviews:9080/").count(),
            3
        );
        let joined = args.join(" ");
        assert!(
            joined.contains("--resolve reviews:9080:198.18.10.1"),
            "{joined}"
        );
        assert!(joined.contains("-H end-user: jason"), "{joined}");
    }
}
