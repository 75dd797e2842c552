//! `isthmus lab load`: bounded HTTP load sent from inside a pod, through its sidecar
//! when it has one, like `hey` run in a pod: a fixed number of concurrent clients at
//! a fixed total rate for a fixed time (at most rate × time requests, none started
//! after it), one request per connection. Reports every status and error, so a
//! change made meanwhile (a scale-down, a rolling update) can be checked for lost
//! requests.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::LabError;
use crate::controller::Lab;
use crate::http::{self, Url};

/// The most concurrent clients a load may have.
pub const MAX_CONCURRENCY: usize = 64;
/// The highest total rate a load may ask for (requests per second).
pub const MAX_RATE: u32 = 2000;
/// The longest a load may last.
pub const MAX_DURATION: Duration = Duration::from_secs(60);

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `http://HOST[:PORT][/PATH]`; HOST as the pod resolves it (its hosts file).
    pub url: String,
    pub concurrency: usize,
    /// Requests per second, over all clients.
    pub rate: u32,
    pub duration: Duration,
    /// How long one request may take.
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub requests: u64,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without an answer, by error.
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Requests per second achieved.
    pub rate: f64,
    pub latency_ms: Latency,
}

/// Latency percentiles of the requests, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LoadReport {
    /// Requests without a 2xx answer.
    pub fn failed(&self) -> u64 {
        self.requests - self.ok
    }

    /// For people, a line each.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} requests in {:.2} s ({:.0}/s): {} ok (2xx), {} failed\n",
            self.requests,
            self.seconds,
            self.rate,
            self.ok,
            self.failed()
        );
        for (status, n) in &self.statuses {
            out.push_str(&format!("  status {status}: {n}\n"));
        }
        for (error, n) in &self.errors {
            out.push_str(&format!("  error {error}: {n}\n"));
        }
        let l = &self.latency_ms;
        out.push_str(&format!(
            "  latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            l.p50, l.p90, l.p99, l.max
        ));
        out
    }

    fn from_samples(samples: Vec<(Result<u16, String>, Duration)>, elapsed: Duration) -> Self {
        let mut report = LoadReport {
            seconds: elapsed.as_secs_f64(),
            ..LoadReport::default()
        };
        let mut latencies: Vec<f64> = Vec::with_capacity(samples.len());
        for (result, took) in samples {
            report.requests += 1;
            latencies.push(took.as_secs_f64() * 1000.0);
            match result {
                Ok(status) => {
                    *report.statuses.entry(status).or_default() += 1;
                    if (200..300).contains(&status) {
                        report.ok += 1;
                    }
                }
                Err(e) => *report.errors.entry(e).or_default() += 1,
            }
        }
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        report.latency_ms = Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
        };
        report.rate = report.requests as f64 / report.seconds.max(f64::EPSILON);
        report
    }
}

/// Refuses a load beyond the bounds.
fn check(spec: &LoadSpec) -> Result<(), LabError> {
    let limit = |what, limit: String, got: String| Err(LabError::LoadLimit { what, limit, got });
    if spec.concurrency == 0 || spec.concurrency > MAX_CONCURRENCY {
        return limit(
            "--concurrency",
            format!("{MAX_CONCURRENCY} (and 1 at least)"),
            spec.concurrency.to_string(),
        );
    }
    if spec.rate == 0 || spec.rate > MAX_RATE {
        return limit(
            "--rate",
            format!("{MAX_RATE}/s (and 1 at least)"),
            spec.rate.to_string(),
        );
    }
    if spec.duration > MAX_DURATION {
        return limit(
            "--duration",
            format!("{MAX_DURATION:?}"),
            format!("{:?}", spec.duration),
        );
    }
    Ok(())
}

impl Lab {
    /// Sends `spec`'s load from pod `pod` (`ns/name` or `ns/deployment`) of `cluster`.
    pub fn load(&self, cluster: &str, pod: &str, spec: &LoadSpec) -> Result<LoadReport, LabError> {
        check(spec)?;
        let (key, _) = self.find_pod(cluster, pod)?;
        let url = Url::parse(&spec.url).map_err(|reason| LabError::InvalidUrl {
            url: spec.url.clone(),
            reason,
        })?;
        let ip =
            match url.host.parse::<Ipv4Addr>() {
                Ok(ip) => ip,
                Err(_) => self.rt.resolve_in_pod(&key, &url.host)?.ok_or_else(|| {
                    LabError::UnknownHost {
                        pod: key.to_string(),
                        host: url.host.clone(),
                    }
                })?,
            };
        let addr = SocketAddr::from((ip, url.port));
        let netns = self.rt.pod_netns(&key)?;
        let start = Instant::now();
        let per_second = f64::from(spec.rate);
        let per_client = netns.run(spec.concurrency, |client| {
            let mut samples = Vec::new();
            // Client i sends requests i, i + n, i + 2n… of an evenly spaced schedule,
            // none after the duration (a client that fell behind sends fewer).
            for k in (client..).step_by(spec.concurrency) {
                let due = Duration::from_secs_f64(k as f64 / per_second);
                if due >= spec.duration || start.elapsed() >= spec.duration {
                    break;
                }
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                let sent = Instant::now();
                let result = http::get(addr, &url.authority, &url.path, spec.timeout)
                    .map(|r| r.status)
                    .map_err(|e| e.to_string());
                samples.push((result, sent.elapsed()));
            }
            samples
        })?;
        Ok(LoadReport::from_samples(
            per_client.into_iter().flatten().collect(),
            start.elapsed(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_count_statuses_errors_and_latency() {
        let ms = Duration::from_millis;
        let r = LoadReport::from_samples(
            vec![
                (Ok(200), ms(1)),
                (Ok(200), ms(2)),
                (Ok(503), ms(3)),
                (Err("connection refused".into()), ms(4)),
            ],
            Duration::from_secs(2),
        );
        assert_eq!((r.requests, r.ok, r.failed()), (4, 2, 2));
        assert_eq!(r.statuses, BTreeMap::from([(200, 2), (503, 1)]));
        assert_eq!(r.errors["connection refused"], 1);
        assert_eq!((r.latency_ms.p50, r.latency_ms.max), (2.0, 4.0));
        assert_eq!(r.rate, 2.0);
        let text = r.render();
        assert!(
            text.contains("2 ok (2xx), 2 failed") && text.contains("status 503: 1"),
            "{text}"
        );
    }

    #[test]
    fn loads_are_bounded() {
        let spec = LoadSpec {
            url: "http://x/".into(),
            concurrency: 10,
            rate: 400,
            duration: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        };
        assert!(check(&spec).is_ok());
        for bad in [
            LoadSpec {
                concurrency: 0,
                ..spec.clone()
            },
            LoadSpec {
                concurrency: 65,
                ..spec.clone()
            },
            LoadSpec {
                rate: 2001,
                ..spec.clone()
            },
            LoadSpec {
                duration: Duration::from_secs(61),
                ..spec.clone()
            },
        ] {
            let e = check(&bad).unwrap_err().to_string();
            assert!(e.contains("at most"), "{e}");
        }
    }
}
