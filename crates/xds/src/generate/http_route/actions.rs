//! What a route does besides choosing clusters: header operations, redirects, direct
//! responses, retries, mirrors, faults and CORS.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
};
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryBackOff, RetryHostPredicate, RetryPriority, retry_host_predicate, retry_priority,
};
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RetryPolicy,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::FaultDelay as EnvoyFaultDelay;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort as EnvoyFaultAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use isthmus_model::istio::refs::{
    decode_base64, is_authority_header, is_internal_header, is_known_http_status,
};
use isthmus_model::istio::validate::parse_duration;
use isthmus_model::istio::virtual_service::{
    CorsPolicy, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection, HttpRedirect,
    HttpRetry, HttpRoute, Percent, RedirectPortSelection, UnmatchedPreflights,
};
use prost::{Message, Name};
use tracing::warn;

use super::matching::string_matcher;
use super::parse_duration_logged;

pub(super) const PREVIOUS_HOSTS_PREDICATE: &str = "envoy.retry_host_predicates.previous_hosts";
pub(super) const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";
pub(super) const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

#[derive(Default)]
pub(super) struct HeaderOps {
    pub(super) request_add: Vec<HeaderValueOption>,
    pub(super) request_remove: Vec<String>,
    pub(super) response_add: Vec<HeaderValueOption>,
    pub(super) response_remove: Vec<String>,
    /// A `Host`/`:authority` set or added on requests: a host rewrite.
    pub(super) authority: Option<String>,
}

/// A route's or a weighted cluster's header lists (the fields are named alike in both):
/// request headers to add and remove, response headers to add and remove.
macro_rules! header_lists {
    ($target:expr) => {
        (
            &mut $target.request_headers_to_add,
            &mut $target.request_headers_to_remove,
            &mut $target.response_headers_to_add,
            &mut $target.response_headers_to_remove,
        )
    };
}
pub(super) use header_lists;

/// The lists [`header_lists!`] gives.
pub(super) type HeaderLists<'a> = (
    &'a mut Vec<HeaderValueOption>,
    &'a mut Vec<String>,
    &'a mut Vec<HeaderValueOption>,
    &'a mut Vec<String>,
);

impl HeaderOps {
    /// Appends the operations to a route's or a weighted cluster's [`header_lists!`];
    /// the host rewrite, if any, is for the caller.
    pub(super) fn apply_to(self, lists: HeaderLists<'_>) -> Option<String> {
        let (request_add, request_remove, response_add, response_remove) = lists;
        request_add.extend(self.request_add);
        request_remove.extend(self.request_remove);
        response_add.extend(self.response_add);
        response_remove.extend(self.response_remove);
        self.authority
    }
}

/// Istio's `TranslateHeadersOperations`: `set` overwrites, `add` appends (each sorted by
/// name); pseudo-headers and `Host` cannot be changed this way, but a request `Host` or
/// `:authority` becomes a host rewrite (`set` winning over `add`).
pub(super) fn header_operations(h: &Headers) -> HeaderOps {
    let empty = HeaderOperations::default();
    let req = h.request.as_ref().unwrap_or(&empty);
    let resp = h.response.as_ref().unwrap_or(&empty);
    let (mut request_add, set_authority) =
        header_values(&req.set, HeaderAppendAction::OverwriteIfExistsOrAdd);
    let (add, add_authority) = header_values(&req.add, HeaderAppendAction::AppendIfExistsOrAdd);
    request_add.extend(add);
    let (mut response_add, _) =
        header_values(&resp.set, HeaderAppendAction::OverwriteIfExistsOrAdd);
    response_add.extend(header_values(&resp.add, HeaderAppendAction::AppendIfExistsOrAdd).0);
    HeaderOps {
        request_add,
        request_remove: drop_internal(&req.remove),
        response_add,
        response_remove: drop_internal(&resp.remove),
        authority: set_authority.or(add_authority),
    }
}

pub(super) fn header_values(
    headers: &BTreeMap<String, String>,
    action: HeaderAppendAction,
) -> (Vec<HeaderValueOption>, Option<String>) {
    let mut authority = None;
    let mut out = Vec::new();
    for (key, value) in headers {
        if is_authority_header(key) {
            authority = Some(value.clone());
        }
        if is_internal_header(key) {
            continue;
        }
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        });
    }
    (out, authority)
}

pub(super) fn drop_internal(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !is_internal_header(n))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------
// Redirects and direct responses
// ---------------------------------------------------------------------------------------

/// Istio's `ApplyRedirect` (listener not TLS: an unset scheme is `http`); `None` for an
/// unsupported redirect code.
pub(super) fn redirect_action(r: &HttpRedirect, listener_port: u16) -> Option<RedirectAction> {
    let response_code = match r.redirect_code.unwrap_or(0) {
        0 | 301 => RedirectResponseCode::MovedPermanently,
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => return None,
    };
    let mut out = RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        response_code: response_code as i32,
        ..Default::default()
    };
    if let Some(prefix) = &r.prefix_rewrite {
        out.path_rewrite_specifier = Some(PathRewriteSpecifier::PrefixRewrite(prefix.clone()));
    } else if let Some(uri) = &r.uri {
        out.path_rewrite_specifier = Some(PathRewriteSpecifier::PathRedirect(uri.clone()));
    }
    let scheme = r.scheme.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = scheme {
        out.scheme_rewrite_specifier = Some(SchemeRewriteSpecifier::SchemeRedirect(s.to_string()));
    }
    let port = match (r.port, r.derive_port) {
        (Some(p), _) => Some(p),
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(u32::from(listener_port)),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => Some(0),
        (None, None) => None,
    };
    if let Some(port) = port {
        let scheme = scheme.unwrap_or("http");
        // No explicit :80 for http or :443 for https.
        out.port_redirect = match (port, scheme) {
            (80, "http") | (443, "https") => 0,
            _ => port,
        };
    }
    Some(out)
}

/// Istio's `ApplyDirectResponse`: the status and an inline body (`bytes` is base64).
pub(super) fn direct_response_action(d: &HttpDirectResponse) -> DirectResponseAction {
    let body = d.body.as_ref().and_then(|b| {
        let specifier = if let Some(s) = &b.string {
            data_source::Specifier::InlineString(s.clone())
        } else {
            let encoded = b.bytes.as_deref()?;
            let bytes = decode_base64(encoded).unwrap_or_else(|| {
                warn!("directResponse body bytes are not valid base64; sent as they are");
                encoded.as_bytes().to_vec()
            });
            data_source::Specifier::InlineBytes(bytes)
        };
        Some(DataSource {
            specifier: Some(specifier),
            ..Default::default()
        })
    });
    DirectResponseAction {
        status: d.status,
        body,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Retries, mirrors, faults, CORS
// ---------------------------------------------------------------------------------------

pub(super) fn to_any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// Istio's `retry.ConvertPolicy`: the default policy without `retries`, none with
/// `attempts` 0 (or unset), else the default overridden by the rule's fields. With a
/// consistent-hash destination the default omits the previous-hosts predicate.
pub(super) fn retry_policy(r: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let mut out = RetryPolicy {
        num_retries: Some(UInt32Value { value: 2 }),
        retry_on: DEFAULT_RETRY_ON.to_string(),
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: vec![503],
        ..Default::default()
    };
    if !consistent_hash {
        out.retry_host_predicate = vec![previous_hosts_predicate()];
    }
    let Some(r) = r else {
        return Some(out);
    };
    let attempts = r.attempts.unwrap_or(0);
    if attempts <= 0 {
        return None;
    }
    out.num_retries = Some(UInt32Value {
        value: attempts.unsigned_abs(),
    });
    if let Some(retry_on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        let (on, codes) = parse_retry_on(retry_on);
        out.retry_on = on;
        out.retriable_status_codes = codes;
        if !out.retriable_status_codes.is_empty()
            && !out.retry_on.contains("retriable-status-codes")
        {
            if !out.retry_on.is_empty() {
                out.retry_on.push(',');
            }
            out.retry_on.push_str("retriable-status-codes");
        }
    }
    if let Some(t) = r.per_try_timeout.as_deref() {
        out.per_try_timeout = parse_duration_logged(t);
    }
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore {
            vec![previous_hosts_predicate()]
        } else {
            Vec::new()
        };
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(RetryPriority {
            name: PREVIOUS_PRIORITIES.to_string(),
            config_type: Some(retry_priority::ConfigType::TypedConfig(to_any(
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    if let Some(b) = r.backoff.as_deref() {
        out.retry_back_off = Some(RetryBackOff {
            base_interval: parse_duration_logged(b),
            max_interval: None,
        });
    }
    Some(out)
}

pub(super) fn previous_hosts_predicate() -> RetryHostPredicate {
    RetryHostPredicate {
        name: PREVIOUS_HOSTS_PREDICATE.to_string(),
        config_type: Some(retry_host_predicate::ConfigType::TypedConfig(to_any(
            &PreviousHostsPredicate {},
        ))),
    }
}

/// Istio's `parseRetryOn`: HTTP status codes go to `retriable_status_codes`, the rest stay
/// policies.
pub(super) fn parse_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let mut policies = Vec::new();
    let mut codes = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if is_known_http_status(code) => codes.push(code),
            _ => policies.push(part),
        }
    }
    (policies.join(","), codes)
}

/// Istio's `translatePercentToFractionalPercent`: per million.
pub(super) fn percent_fraction(p: &Percent) -> FractionalPercent {
    FractionalPercent {
        numerator: (p.value.unwrap_or(0.0) * 10000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// Istio's `translateIntegerToFractionalPercent`: per hundred.
pub(super) fn integer_fraction(p: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: p,
        denominator: DenominatorType::Hundred as i32,
    }
}

/// Istio's `MirrorPercent`: `mirrorPercentage`, else `mirrorPercent`, else 100%; `None`
/// (no mirroring) when explicitly 0.
pub(super) fn mirror_fraction(http: &HttpRoute) -> Option<RuntimeFractionalPercent> {
    let fraction = if let Some(p) = &http.mirror_percentage {
        (p.value.unwrap_or(0.0) > 0.0).then(|| percent_fraction(p))?
    } else if let Some(p) = http.mirror_percent.or(http.mirror_percent_legacy) {
        (p > 0).then(|| integer_fraction(p))?
    } else {
        integer_fraction(100)
    };
    Some(RuntimeFractionalPercent {
        default_value: Some(fraction),
        runtime_key: String::new(),
    })
}

/// Istio's `MirrorPercentByPolicy`.
pub(super) fn policy_mirror_fraction(p: Option<&Percent>) -> Option<RuntimeFractionalPercent> {
    let fraction = match p {
        Some(p) => (p.value.unwrap_or(0.0) > 0.0).then(|| percent_fraction(p))?,
        None => integer_fraction(100),
    };
    Some(RuntimeFractionalPercent {
        default_value: Some(fraction),
        runtime_key: String::new(),
    })
}

pub(super) fn mirror_policy(
    cluster: String,
    fraction: RuntimeFractionalPercent,
) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(fraction),
        trace_sampled: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// Istio's `TranslateFault`: a fixed delay and/or an HTTP or gRPC abort; `None` when
/// neither can be expressed (exponential delays and HTTP/2 errors are not supported).
pub(super) fn translate_fault(f: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let percentage = match &d.percentage {
            Some(p) => percent_fraction(p),
            None => integer_fraction(d.percent.unwrap_or(0).max(0).unsigned_abs()),
        };
        let Some(fixed) = d.fixed_delay.as_deref().and_then(parse_duration_logged) else {
            warn!("only fixed delay faults are supported; the delay is ignored");
            return None;
        };
        Some(EnvoyFaultDelay {
            percentage: Some(percentage),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(fixed)),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = if let Some(status) = a.http_status {
            ErrorType::HttpStatus(status.max(0).unsigned_abs())
        } else if let Some(status) = &a.grpc_status {
            ErrorType::GrpcStatus(grpc_status_code(status))
        } else {
            warn!("only HTTP and gRPC abort faults are supported; the abort is ignored");
            return None;
        };
        Some(EnvoyFaultAbort {
            percentage: a.percentage.as_ref().map(percent_fraction),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

/// A gRPC status name (`UNAVAILABLE`) or number to its code; unknown names are 0, as in
/// Istio's lookup.
pub(super) fn grpc_status_code(status: &str) -> u32 {
    if let Ok(n) = status.parse::<u32>() {
        return n;
    }
    isthmus_model::istio::virtual_service::GRPC_STATUSES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(status))
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(0)
}

/// Istio's `TranslateCORSPolicy`.
pub(super) fn translate_cors(c: &CorsPolicy) -> EnvoyCorsPolicy {
    let allow_origin_string_match = if c.allow_origins.is_empty() {
        c.allow_origin
            .iter()
            .map(|o| StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
                ignore_case: false,
            })
            .collect()
    } else {
        c.allow_origins.iter().filter_map(string_matcher).collect()
    };
    EnvoyCorsPolicy {
        allow_origin_string_match,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_deref()
            .and_then(parse_duration)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(integer_fraction(100)),
            runtime_key: String::new(),
        }),
        forward_not_matching_preflights: Some(BoolValue {
            value: c.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
        }),
        ..Default::default()
    }
}
