//! Validation of Istio specs as Istio's validation webhook (`pkg/config/validation`
//! in istio/istio) and the CRD schemas' CEL rules do it, and the checks shared by the
//! kinds: durations, host names, IPs, labels, ports, `exportTo`, regexes.
//!
//! Each kind's `ValidateSpec` impl lives with its types (`virtual_service/validate.rs`,
//! `destination_rule/validate.rs`, `gateway.rs`, …).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::FieldIssue;
use super::common::{LabelSelector, WorkloadSelector};

// Wildcard host matching lives with Istio's other reference rules; re-exported for
// callers that look for it with validation.
pub use super::refs::{host_subset_of, hosts_overlap};

/// Pushes an Error about `field`.
pub(crate) fn error(
    out: &mut Vec<FieldIssue>,
    field: impl Into<String>,
    message: impl Into<String>,
) {
    out.push(FieldIssue::error(field, message));
}

/// Pushes a Warning about `field`.
pub(crate) fn warning(
    out: &mut Vec<FieldIssue>,
    field: impl Into<String>,
    message: impl Into<String>,
) {
    out.push(FieldIssue::warning(field, message));
}

// ---------------------------------------------------------------------------
// Durations

/// One millisecond: the smallest duration most Istio fields accept.
pub const MILLISECOND: Duration = Duration::from_millis(1);

const NANOS_PER_MS: i128 = 1_000_000;

/// Parses a Go / Kubernetes duration string (`"1s"`, `"0.5s"`, `"100ms"`, `"1m"`,
/// `"1h30m"`, `"-2s"`, `"0"`) into signed nanoseconds.
pub fn parse_duration_nanos(s: &str) -> Result<i128, String> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body == "0" {
        return Ok(0);
    }
    if body.is_empty() {
        return Err("it is empty".into());
    }
    let mut rest = body;
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let n = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(n)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(format!("expected a number at {rest:?}"));
        }
        let unit_len = after_num
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_num.len());
        let (unit, after_unit) = after_num.split_at(unit_len);
        let per_unit: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "{:?} has no unit",
                    &rest[..rest.len() - after_num.len()]
                ));
            }
            other => return Err(format!("unknown unit {other:?}")),
        };
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| "it is too large".to_string())?
        };
        let mut frac: i128 = 0;
        let mut scale: i128 = 1;
        for d in frac_part.bytes().take(18) {
            frac = frac * 10 + i128::from(d - b'0');
            scale *= 10;
        }
        let value = whole
            .checked_mul(per_unit)
            .and_then(|v| v.checked_add(frac * per_unit / scale))
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= i128::from(i64::MAX))
            .ok_or_else(|| "it is too large".to_string())?;
        total = value;
        rest = after_unit;
    }
    Ok(if negative { -total } else { total })
}

/// Parses a duration string into a [`Duration`]; `None` when it is invalid or negative.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let nanos = parse_duration_nanos(s).ok()?;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// Checks a duration field: it must parse, not be negative, be at least `min`, and
/// (when `min` is 1ms or more, as for every Istio field with a minimum) be a whole
/// number of milliseconds.
pub fn validate_duration(field: &str, s: &str, min: Duration) -> Option<FieldIssue> {
    let nanos = match parse_duration_nanos(s) {
        Ok(n) => n,
        Err(e) => {
            return Some(FieldIssue::error(
                field,
                format!(
                    "{s:?} is not a valid duration ({e}); write a number with a unit, e.g. \"5s\", \"100ms\" or \"1m30s\""
                ),
            ));
        }
    };
    if nanos < 0 {
        return Some(FieldIssue::error(
            field,
            format!("duration {s:?} is negative; use a positive duration"),
        ));
    }
    let min_nanos = i128::try_from(min.as_nanos()).unwrap_or(i128::MAX);
    if nanos < min_nanos {
        let m = format_duration(min);
        return Some(FieldIssue::error(
            field,
            format!("duration {s:?} is below the minimum of {m}; use at least {m}"),
        ));
    }
    if min_nanos >= NANOS_PER_MS && nanos % NANOS_PER_MS != 0 {
        return Some(FieldIssue::error(
            field,
            format!(
                "duration {s:?} is finer than a millisecond; Istio supports only millisecond precision"
            ),
        ));
    }
    None
}

/// [`validate_duration`] for an optional field, pushing into `out`.
pub(crate) fn check_duration(
    out: &mut Vec<FieldIssue>,
    field: impl AsRef<str>,
    value: Option<&String>,
    min: Duration,
) {
    if let Some(v) = value {
        out.extend(validate_duration(field.as_ref(), v, min));
    }
}

// ---------------------------------------------------------------------------
// Host names and addresses

/// A DNS-1123 label as Istio checks it: letters (either case), digits and `-`,
/// starting and ending with a letter or digit, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A label that may start with `*` or `*-`, or be `*` alone.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    if s.len() > 63 {
        return false;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_dns1123_label(rest)
}

const HOST_HINT: &str =
    "use letters, digits and '-' in dot-separated labels of at most 63 characters";

fn check_dns1123_labels(whole: &str, domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let last = parts.len() - 1;
    let tld = parts[last];
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{whole:?} is not a valid host name: its last label {tld:?} is all digits"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == last && label.is_empty() {
            break;
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "{whole:?} is not a valid host name: label {label:?} is invalid; {HOST_HINT}"
            ));
        }
    }
    Ok(())
}

fn check_host_preconditions(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("the host name is empty".into());
    }
    if domain.len() > 255 {
        return Err(format!(
            "host name is {} characters long; at most 255 are allowed",
            domain.len()
        ));
    }
    Ok(())
}

/// Istio's `ValidateWildcardDomain`: a host name whose first label may be a wildcard
/// (`*`, `*.example.com`, `*foo.example.com`); short names (`reviews`) are allowed.
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    check_host_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "{domain:?} is not a valid host name: label {first:?} is invalid; {HOST_HINT}, with '*' only at the start"
        ));
    }
    match rest {
        Some(rest) => check_dns1123_labels(domain, rest),
        None => Ok(()),
    }
}

/// Istio's `ValidateFQDN`: a host name without wildcards.
pub fn validate_fqdn(domain: &str) -> Result<(), String> {
    check_host_preconditions(domain)?;
    check_dns1123_labels(domain, domain)
}

/// Whether `s` is an IPv4 or IPv6 address.
pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Istio's `ValidateIPSubnet`: an IP address or a CIDR range.
pub fn validate_ip_subnet(s: &str) -> Result<(), String> {
    if s.contains('/') {
        s.parse::<ipnet::IpNet>()
            .map(|_| ())
            .map_err(|_| format!("{s:?} is not a valid CIDR range; write it like \"10.0.0.0/16\""))
    } else if is_ip(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid IP address or CIDR range; write it like \"10.0.0.1\" or \"10.0.0.0/16\""
        ))
    }
}

/// A port number check: `Some(message)` unless `1 <= n <= 65535`.
pub(crate) fn port_problem(n: u32) -> Option<String> {
    (!(1..=65535).contains(&n))
        .then(|| format!("port {n} is not between 1 and 65535; use a valid port number"))
}

/// Pushes an Error unless `n` is a valid port number.
pub(crate) fn check_port(out: &mut Vec<FieldIssue>, field: impl Into<String>, n: u32) {
    if let Some(m) = port_problem(n) {
        error(out, field, m);
    }
}

/// Istio's `ValidatePortName`.
pub(crate) fn check_port_name(out: &mut Vec<FieldIssue>, field: impl Into<String>, name: &str) {
    if name.is_empty() {
        error(out, field, "port name is required, e.g. \"http\"");
    } else if !is_dns1123_label(name) {
        error(
            out,
            field,
            format!(
                "port name {name:?} is not valid; use letters, digits and '-' (at most 63 characters, starting and ending with a letter or digit)"
            ),
        );
    }
}

/// Protocols Istio's `protocol.Parse` knows (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tls,
    Mongo,
    Redis,
    Mysql,
}

pub(crate) const PROTOCOLS: &str =
    "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL or UDP";

impl Proto {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "grpc" => Proto::Grpc,
            "grpc-web" => Proto::GrpcWeb,
            "http" => Proto::Http,
            "http_proxy" => Proto::HttpProxy,
            "http2" => Proto::Http2,
            "https" => Proto::Https,
            "tls" => Proto::Tls,
            "mongo" => Proto::Mongo,
            "redis" => Proto::Redis,
            "mysql" => Proto::Mysql,
            _ => return None,
        })
    }
    pub(crate) fn is_http(self) -> bool {
        matches!(
            self,
            Proto::Http | Proto::Http2 | Proto::Grpc | Proto::GrpcWeb | Proto::HttpProxy
        )
    }
    pub(crate) fn is_tls(self) -> bool {
        matches!(self, Proto::Https | Proto::Tls)
    }
}

/// Istio's `ValidateProtocol`: empty (protocol sniffing) or a known protocol.
pub(crate) fn check_protocol(out: &mut Vec<FieldIssue>, field: impl Into<String>, p: &str) {
    if !p.is_empty() && Proto::parse(p).is_none() {
        error(
            out,
            field,
            format!("protocol {p:?} is not supported; use {PROTOCOLS}"),
        );
    }
}

// ---------------------------------------------------------------------------
// Labels and selectors

fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && s.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A lowercase DNS-1123 subdomain (Kubernetes object names, label key prefixes).
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.')
            .all(|l| is_dns1123_label(l) && !l.bytes().any(|b| b.is_ascii_uppercase()))
}

/// Why `k` is not a valid Kubernetes label key (`[prefix/]name`), if it isn't.
fn label_key_problem(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Some(format!(
            "label key {k:?} has an invalid prefix {p:?}; the prefix must be a lowercase DNS name"
        ));
    }
    if !is_qualified_name(name) {
        return Some(format!(
            "label key {k:?} is not valid; use letters, digits, '-', '_' and '.' (at most 63 characters, starting and ending with a letter or digit), optionally after a DNS prefix and '/'"
        ));
    }
    None
}

fn label_value_ok(v: &str) -> bool {
    v.is_empty() || is_qualified_name(v)
}

/// Istio's `labels.Instance.Validate`: Kubernetes label keys and values.
pub(crate) fn check_labels(
    out: &mut Vec<FieldIssue>,
    field: &str,
    labels: &BTreeMap<String, String>,
) {
    for (k, v) in labels {
        let f = format!("{field}.{k}");
        if let Some(m) = label_key_problem(k) {
            error(out, &f, m);
        }
        if !label_value_ok(v) {
            error(
                out,
                &f,
                format!(
                    "label value {v:?} is not valid; use letters, digits, '-', '_' and '.' (at most 63 characters, starting and ending with a letter or digit)"
                ),
            );
        }
    }
}

fn check_selector_labels(
    out: &mut Vec<FieldIssue>,
    field: &str,
    labels: &BTreeMap<String, String>,
    max: usize,
) {
    if labels.len() > max {
        error(
            out,
            field,
            format!(
                "{} labels are too many; at most {max} are allowed",
                labels.len()
            ),
        );
    }
    for (k, v) in labels {
        let f = format!("{field}.{k}");
        if k.is_empty() {
            error(out, &f, "label key is empty; name the label to match");
            continue;
        }
        if k.contains('*') || v.contains('*') {
            error(
                out,
                &f,
                "wildcards are not supported in workload selectors; match exact label keys and values",
            );
            continue;
        }
        if let Some(m) = label_key_problem(k) {
            error(out, &f, m);
        }
        if !label_value_ok(v) {
            error(
                out,
                &f,
                format!(
                    "label value {v:?} is not valid; use letters, digits, '-', '_' and '.' (at most 63 characters, starting and ending with a letter or digit)"
                ),
            );
        }
    }
}

/// A `WorkloadSelector` (ServiceEntry, Sidecar): valid labels, no wildcards.
pub(crate) fn check_workload_selector(
    out: &mut Vec<FieldIssue>,
    field: &str,
    s: &WorkloadSelector,
) {
    check_selector_labels(out, &format!("{field}.labels"), &s.labels, 256);
}

/// Istio's `validateWorkloadSelector` for `matchLabels` selectors (DestinationRule,
/// PeerAuthentication).
pub(crate) fn check_label_selector(out: &mut Vec<FieldIssue>, field: &str, s: &LabelSelector) {
    if s.match_labels.is_empty() {
        warning(
            out,
            format!("{field}.matchLabels"),
            "the selector has no labels, so it selects every workload in the namespace; add matchLabels or remove the selector",
        );
    }
    check_selector_labels(out, &format!("{field}.matchLabels"), &s.match_labels, 4096);
}

// ---------------------------------------------------------------------------
// exportTo

/// Istio's `validateExportTo`: entries are `.`, `*`, a namespace (or `~` in a
/// ServiceEntry), without duplicates and without mixing `*`/`~` with others.
pub(crate) fn check_export_to(
    out: &mut Vec<FieldIssue>,
    field: &str,
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
    dr_with_workload_selector: bool,
) {
    // Namespace (with `.` resolved) -> the entry that named it.
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, e) in export_to.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let key = if e == "." { namespace } else { e.as_str() };
        if let Some(first) = seen.get(key) {
            if *first != e {
                error(
                    out,
                    &f,
                    format!("\".\" and {namespace:?} are the same namespace here; list it once"),
                );
            } else {
                error(
                    out,
                    &f,
                    format!("duplicate exportTo entry {e:?}; list each namespace once"),
                );
            }
            continue;
        }
        match e.as_str() {
            "." | "*" => {}
            "~" if is_service_entry => {}
            "~" => {
                error(
                    out,
                    &f,
                    "exportTo \"~\" (no one) is only allowed in a ServiceEntry; use \".\" to keep it in this namespace",
                );
                continue;
            }
            _ if is_dns1123_label(e) => {}
            _ => {
                error(
                    out,
                    &f,
                    format!(
                        "{e:?} is not a valid exportTo entry; use \".\" (this namespace), \"*\" (all namespaces) or a namespace name"
                    ),
                );
                continue;
            }
        }
        seen.insert(key, e);
    }
    if dr_with_workload_selector
        && !seen.is_empty()
        && !(seen.len() == 1 && seen.contains_key(namespace))
    {
        error(
            out,
            field,
            "a DestinationRule with a workloadSelector can only be exported to its own namespace; use exportTo: [\".\"]",
        );
    }
    if seen.contains_key("*") && export_to.len() > 1 {
        error(
            out,
            field,
            "exportTo mixes \"*\" (all namespaces) with other entries; use \"*\" alone or list only namespaces",
        );
    }
    if seen.contains_key("~") && export_to.len() > 1 {
        error(
            out,
            field,
            "exportTo \"~\" (no one) cannot be combined with other entries; use it alone",
        );
    }
}

// ---------------------------------------------------------------------------
// Regexes, headers, percentages

/// Compiles `re` with the `regex` crate (RE2 syntax, as Envoy uses): `Some(message)`
/// when it is empty or does not compile.
pub(crate) fn regex_problem(re: &str) -> Option<String> {
    if re.is_empty() {
        return Some("regex is empty; write a pattern or remove the field".into());
    }
    match regex::Regex::new(re) {
        Ok(_) => None,
        Err(e) => {
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .map(str::to_string)
                .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
            Some(format!(
                "regex {re:?} is not valid: {reason}; fix the pattern (RE2 syntax)"
            ))
        }
    }
}

/// Pushes an Error when `re` is not a valid regex.
pub(crate) fn check_regex(out: &mut Vec<FieldIssue>, field: impl Into<String>, re: &str) {
    if let Some(m) = regex_problem(re) {
        error(out, field, m);
    }
}

/// Istio's `ValidateHTTPHeaderName`: `[-_A-Za-z0-9]+`. Upper case is accepted (Envoy
/// lowercases header names) but warned about, as Istio documents lowercase names for
/// header matches.
pub(crate) fn check_header_name(out: &mut Vec<FieldIssue>, field: impl Into<String>, name: &str) {
    check_header_name_case(out, field, name, true);
}

/// [`check_header_name`], optionally without the upper-case warning (for header names
/// that are only echoed, e.g. in CORS responses).
pub(crate) fn check_header_name_case(
    out: &mut Vec<FieldIssue>,
    field: impl Into<String>,
    name: &str,
    warn_upper: bool,
) {
    let field = field.into();
    if name.is_empty() {
        error(out, field, "header name is empty; name the header");
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        error(
            out,
            field,
            format!("header name {name:?} is not valid; use letters, digits, '-' and '_'"),
        );
    } else if warn_upper && name.bytes().any(|b| b.is_ascii_uppercase()) {
        warning(
            out,
            field,
            format!(
                "header name {name:?} has upper-case letters; Istio expects lowercase header names, write {:?}",
                name.to_ascii_lowercase()
            ),
        );
    }
}

/// A percentage between 0 and 100.
pub(crate) fn check_percent_value(out: &mut Vec<FieldIssue>, field: impl Into<String>, v: f64) {
    if !(0.0..=100.0).contains(&v) {
        error(
            out,
            field,
            format!("percentage {v} is not between 0 and 100"),
        );
    }
}

/// An integer percentage between 0 and 100.
pub(crate) fn check_percent_int(out: &mut Vec<FieldIssue>, field: impl Into<String>, v: i64) {
    if !(0..=100).contains(&v) {
        error(
            out,
            field,
            format!("percentage {v} is not between 0 and 100"),
        );
    }
}

/// A count that must not be negative.
pub(crate) fn check_non_negative(
    out: &mut Vec<FieldIssue>,
    field: impl Into<String>,
    v: Option<i32>,
) {
    if let Some(v) = v
        && v < 0
    {
        error(out, field, format!("{v} is negative; use 0 or more"));
    }
}

/// The names of the set options, for "set only one of" messages.
pub(crate) fn set_names(options: &[(&'static str, bool)]) -> Vec<&'static str> {
    options
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect()
}

// ---------------------------------------------------------------------------
// Kubernetes Services

/// Checks of a Kubernetes Service that the API server would reject.
pub fn validate_service(s: &k8s_openapi::api::core::v1::Service, out: &mut Vec<FieldIssue>) {
    let Some(spec) = &s.spec else { return };
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&p.port) {
            out.push(FieldIssue::error(
                format!("spec.ports[{i}].port"),
                format!("port {} is not between 1 and 65535", p.port),
            ));
        }
        if let Some(n) = &p.name
            && !names.insert(n.clone())
        {
            out.push(FieldIssue::error(
                format!("spec.ports[{i}].name"),
                format!("duplicate port name {n:?}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let ms = |s: &str| parse_duration_nanos(s).map(|n| n / NANOS_PER_MS);
        assert_eq!(ms("1s"), Ok(1000));
        assert_eq!(ms("0.5s"), Ok(500));
        assert_eq!(ms(".5s"), Ok(500));
        assert_eq!(ms("100ms"), Ok(100));
        assert_eq!(ms("1m"), Ok(60_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("-2s"), Ok(-2000));
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(parse_duration_nanos("1500us"), Ok(1_500_000));
        assert_eq!(parse_duration_nanos("1µs"), Ok(1000));
        for bad in [
            "",
            "5",
            "5x",
            "s",
            "1.5.5s",
            "1s5",
            "abc",
            ".s",
            "-",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration_nanos(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("-1m"), None);
    }

    #[test]
    fn duration_validation_messages() {
        let f = "spec.http[0].timeout";
        assert!(validate_duration(f, "5s", MILLISECOND).is_none());
        assert!(validate_duration(f, "1h30m", MILLISECOND).is_none());
        let e = validate_duration(f, "5x", MILLISECOND).unwrap();
        assert_eq!(e.field, f);
        assert!(e.message.contains("unknown unit \"x\""), "{}", e.message);
        let e = validate_duration(f, "-1s", Duration::ZERO).unwrap();
        assert!(e.message.contains("negative"), "{}", e.message);
        let e = validate_duration(f, "500us", MILLISECOND).unwrap();
        assert!(e.message.contains("minimum of 1ms"), "{}", e.message);
        let e = validate_duration(f, "1.5ms", MILLISECOND).unwrap();
        assert!(e.message.contains("millisecond precision"), "{}", e.message);
        assert!(validate_duration(f, "0s", Duration::ZERO).is_none());
    }

    #[test]
    fn hosts_follow_istio() {
        for ok in [
            "reviews",
            "reviews.default.svc.cluster.local",
            "*",
            "*.example.com",
            "*foo.example.com",
            "istio.io.",
            "UPPER.example.com",
        ] {
            assert_eq!(validate_wildcard_domain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a.*.com",
            "foo.*",
            "10.0.0.1",
            "a_b.com",
            &"a".repeat(64),
            &format!("{}.com", "a.".repeat(130)),
        ] {
            assert!(validate_wildcard_domain(bad).is_err(), "{bad}");
        }
        assert!(validate_fqdn("*.example.com").is_err());
        assert!(validate_fqdn("example.com").is_ok());
    }

    #[test]
    fn regex_errors_are_short() {
        let m = regex_problem("(abc").unwrap();
        assert!(
            m.starts_with("regex \"(abc\" is not valid: unclosed group"),
            "{m}"
        );
        assert!(m.ends_with("fix the pattern (RE2 syntax)"), "{m}");
        assert!(regex_problem("^/api/v[0-9]+/.*$").is_none());
        assert!(regex_problem("").is_some());
        // Too large to compile: reported, not a panic.
        assert!(regex_problem("(a{1000}){1000}").is_some());
    }

    #[test]
    fn export_to_rules() {
        let run = |v: &[&str], se: bool| {
            let mut out = Vec::new();
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            check_export_to(&mut out, "spec.exportTo", "ns1", &v, se, false);
            out
        };
        assert!(run(&["."], false).is_empty());
        assert!(run(&["*"], false).is_empty());
        assert!(run(&[".", "other"], false).is_empty());
        let o = run(&[".", "*"], false);
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].field, "spec.exportTo");
        assert!(o[0].message.contains("\"*\""));
        let o = run(&[".", "ns1"], false);
        assert_eq!(o[0].field, "spec.exportTo[1]");
        assert!(o[0].message.contains("same namespace"), "{o:?}");
        let o = run(&["ns2", "ns2"], false);
        assert_eq!(o[0].field, "spec.exportTo[1]");
        assert!(
            o[0].message.contains("duplicate exportTo entry \"ns2\""),
            "{o:?}"
        );
        assert_eq!(run(&["~"], false)[0].field, "spec.exportTo[0]");
        assert!(run(&["~"], true).is_empty());
        assert_eq!(run(&["bad_ns"], false)[0].field, "spec.exportTo[0]");
    }

    #[test]
    fn labels_are_kubernetes_labels() {
        let mut out = Vec::new();
        let labels: BTreeMap<String, String> = [
            ("app", "reviews"),
            ("example.com/tier", "web"),
            ("empty", ""),
            ("bad key!", "x"),
            ("k", "-bad"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        check_labels(&mut out, "spec.labels", &labels);
        let fields: Vec<&str> = out.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["spec.labels.bad key!", "spec.labels.k"], "{out:?}");
    }
}
