//! Istio's Bookinfo sample, as its four services behave seen from outside.
//!
//! - [`productpage`]: the HTML page and the `/api/v1` JSON, calling details and reviews;
//! - [`details`]: the book's details;
//! - [`reviews`]: two reviews; v2 and v3 add the ratings (black and red stars);
//! - [`ratings`]: two ratings.
//!
//! Each takes its upstreams' base URLs in its config, from the environment as the
//! real services read it (`DETAILS_HOSTNAME`, `REVIEWS_HOSTNAME`, `RATINGS_HOSTNAME`,
//! `SERVICES_DOMAIN`, port 9080), or directly in a test.

pub mod details;
pub mod productpage;
pub mod ratings;
pub mod reviews;

use axum::http::{HeaderMap, HeaderName};

use crate::Env;

/// The port every Bookinfo service listens on and is called at.
pub const PORT: u16 = 9080;

/// The headers productpage copies from its request to details and reviews (its
/// `getForwardHeaders`; the `x-b3-*` ones it carries through its tracer), plus
/// `end-user` (see [`productpage`]: the signed-in user overrides it).
pub const PRODUCTPAGE_FORWARDED: &[&str] = &[
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "sw8",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
    "end-user",
];

/// The headers reviews copies from its request to ratings.
pub const REVIEWS_FORWARDED: &[&str] = &[
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "sw8",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
];

/// The headers of `incoming` named in `names`, every value of each.
pub fn forwarded(incoming: &HeaderMap, names: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in names {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in incoming.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// `http://{HOST}{.SERVICES_DOMAIN}:9080`, where HOST is `{NAME}_HOSTNAME` or `default`,
/// as the samples build their upstreams' addresses.
pub fn service_url(env: &Env, hostname_var: &str, default: &str, port: u16) -> String {
    let host = env.get(hostname_var).unwrap_or(default);
    let domain = env
        .get("SERVICES_DOMAIN")
        .map(|d| format!(".{d}"))
        .unwrap_or_default();
    format!("http://{host}{domain}:{port}")
}

/// The product id of a path's last segment as the samples read it: its leading
/// digits (with a sign), or `None`.
fn product_id(segment: &str) -> Option<i64> {
    let s = segment.trim();
    let digits = s
        .char_indices()
        .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && (*c == '-' || *c == '+')))
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    s[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn urls_from_env() {
        let env = Env::default();
        assert_eq!(
            service_url(&env, "DETAILS_HOSTNAME", "details", PORT),
            "http://details:9080"
        );
        let env = Env::from_pairs([
            ("SERVICES_DOMAIN", "default.svc.cluster.local"),
            ("RATINGS_HOSTNAME", "ratings-v2"),
        ]);
        assert_eq!(
            service_url(&env, "RATINGS_HOSTNAME", "ratings", PORT),
            "http://ratings-v2.default.svc.cluster.local:9080"
        );
    }

    #[test]
    fn forwards_only_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        h.insert("end-user", HeaderValue::from_static("jason"));
        h.insert("x-other", HeaderValue::from_static("no"));
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        let out = forwarded(&h, REVIEWS_FORWARDED);
        assert_eq!(out.len(), 4);
        assert_eq!(out["x-request-id"], "r1");
        assert_eq!(out["end-user"], "jason");
        assert_eq!(out.get_all("cookie").iter().count(), 2);
        assert!(!out.contains_key("x-other"));
    }

    #[test]
    fn product_ids() {
        assert_eq!(product_id("0"), Some(0));
        assert_eq!(product_id("12abc"), Some(12));
        assert_eq!(product_id("-3"), Some(-3));
        assert_eq!(product_id("abc"), None);
        assert_eq!(product_id(""), None);
    }
}
