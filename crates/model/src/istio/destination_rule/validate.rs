//! Validation of a DestinationRule: host, subsets and workload selector, and the
//! traffic policy checks (load balancer, connection pool, outlier detection, client TLS,
//! tunnel) that the Sidecar's inbound connection pools also use.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::istio::validate::{
    MILLISECOND, check_duration, check_export_to, check_header_name_case, check_label_selector,
    check_labels, check_non_negative, check_percent_int, check_percent_value, check_port, error,
    is_dns1123_label, is_ip, set_names, validate_fqdn, validate_wildcard_domain, warning,
};
use crate::istio::{FieldIssue, ValidateSpec, ValidationContext};

use super::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule,
    H2UpgradePolicy, LoadBalancerSettings, LocalityLbSetting, OutlierDetection, TrafficPolicy,
    TunnelSettings,
};

/// Kubernetes topology labels that `failover` already uses.
const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

impl ValidateSpec for DestinationRule {
    fn validate(&self, ctx: &ValidationContext<'_>, out: &mut Vec<FieldIssue>) {
        if self.host.is_empty() {
            error(
                out,
                "spec.host",
                "host is required: the service this rule applies to, e.g. \"reviews\" or \"*.example.com\"",
            );
        } else if let Err(e) = validate_wildcard_domain(&self.host) {
            error(out, "spec.host", e);
        }
        if let Some(tp) = &self.traffic_policy {
            check_traffic_policy(out, "spec.trafficPolicy", tp);
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, s) in self.subsets.iter().enumerate() {
            let sp = format!("spec.subsets[{i}]");
            if s.name.is_empty() {
                error(
                    out,
                    format!("{sp}.name"),
                    "subset name is required, e.g. \"v1\"",
                );
            } else if !is_dns1123_label(&s.name) {
                error(
                    out,
                    format!("{sp}.name"),
                    format!(
                        "subset name {:?} is not valid; use letters, digits and '-' (at most 63 characters)",
                        s.name
                    ),
                );
            } else if let Some(j) = names.insert(&s.name, i) {
                error(
                    out,
                    format!("{sp}.name"),
                    format!(
                        "duplicate subset name {:?} (also subsets[{j}]); subset names must be unique",
                        s.name
                    ),
                );
            }
            check_labels(out, &format!("{sp}.labels"), &s.labels);
            for (k, v) in &s.labels {
                if v.is_empty() {
                    warning(
                        out,
                        format!("{sp}.labels.{k}"),
                        format!(
                            "label {k:?} has an empty value, so the subset selects only endpoints whose {k:?} label is empty; set the value"
                        ),
                    );
                }
            }
            if let Some(tp) = &s.traffic_policy {
                check_traffic_policy(out, &format!("{sp}.trafficPolicy"), tp);
            }
        }
        check_export_to(
            out,
            "spec.exportTo",
            ctx.namespace,
            &self.export_to,
            false,
            self.workload_selector.is_some(),
        );
        if let Some(ws) = &self.workload_selector {
            check_label_selector(out, "spec.workloadSelector", ws);
        }
    }
}

/// Istio's `validateTrafficPolicy`.
fn check_traffic_policy(out: &mut Vec<FieldIssue>, p: &str, tp: &TrafficPolicy) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        error(
            out,
            p,
            "trafficPolicy is empty; set at least one of loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings, tunnel, proxyProtocol or retryBudget, or remove it",
        );
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        error(out, p, "set only one of tunnel or proxyProtocol");
    }
    if let Some(o) = &tp.outlier_detection {
        check_outlier_detection(out, &format!("{p}.outlierDetection"), o);
    }
    if let Some(c) = &tp.connection_pool {
        check_connection_pool(out, &format!("{p}.connectionPool"), c);
    }
    if let Some(lb) = &tp.load_balancer {
        check_load_balancer(
            out,
            &format!("{p}.loadBalancer"),
            lb,
            tp.outlier_detection.is_some(),
        );
    }
    if let Some(t) = &tp.tls {
        check_client_tls(out, &format!("{p}.tls"), t);
    }
    if tp.port_level_settings.len() > 4096 {
        error(
            out,
            format!("{p}.portLevelSettings"),
            "more than 4096 port-level settings; at most 4096 are allowed",
        );
    }
    let mut ports: BTreeMap<u32, usize> = BTreeMap::new();
    for (k, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{p}.portLevelSettings[{k}]");
        match pl.port.as_ref().and_then(|x| x.number) {
            None | Some(0) => error(
                out,
                format!("{pp}.port.number"),
                "port is required: the port number these settings apply to",
            ),
            Some(n) => {
                check_port(out, format!("{pp}.port.number"), n);
                if let Some(j) = ports.insert(n, k) {
                    error(
                        out,
                        format!("{pp}.port.number"),
                        format!(
                            "port {n} already has settings in portLevelSettings[{j}]; merge them into one entry"
                        ),
                    );
                }
            }
        }
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            error(
                out,
                &pp,
                "the port-level settings set nothing; set loadBalancer, connectionPool, outlierDetection or tls, or remove the entry",
            );
            continue;
        }
        if let Some(o) = &pl.outlier_detection {
            check_outlier_detection(out, &format!("{pp}.outlierDetection"), o);
        }
        if let Some(c) = &pl.connection_pool {
            check_connection_pool(out, &format!("{pp}.connectionPool"), c);
        }
        if let Some(lb) = &pl.load_balancer {
            check_load_balancer(
                out,
                &format!("{pp}.loadBalancer"),
                lb,
                pl.outlier_detection.is_some(),
            );
        }
        if let Some(t) = &pl.tls {
            check_client_tls(out, &format!("{pp}.tls"), t);
        }
    }
    if let Some(t) = &tp.tunnel {
        check_tunnel(out, &format!("{p}.tunnel"), t);
    }
    if let Some(rb) = &tp.retry_budget {
        let rp = format!("{p}.retryBudget");
        if let Some(v) = rb.percent {
            check_percent_value(out, format!("{rp}.percent"), v);
        }
        check_duration(
            out,
            format!("{rp}.budgetInterval"),
            rb.budget_interval.as_ref(),
            Duration::ZERO,
        );
    }
}

/// Istio's `validateOutlierDetection`.
fn check_outlier_detection(out: &mut Vec<FieldIssue>, p: &str, o: &OutlierDetection) {
    check_duration(
        out,
        format!("{p}.baseEjectionTime"),
        o.base_ejection_time.as_ref(),
        MILLISECOND,
    );
    check_duration(
        out,
        format!("{p}.interval"),
        o.interval.as_ref(),
        MILLISECOND,
    );
    if let Some(n) = o.consecutive_errors {
        if n < 0 {
            error(
                out,
                format!("{p}.consecutiveErrors"),
                format!("{n} is negative; use 0 or more"),
            );
        } else if n != 0 {
            warning(
                out,
                format!("{p}.consecutiveErrors"),
                "consecutiveErrors is deprecated; use consecutive5xxErrors or consecutiveGatewayErrors",
            );
        }
    }
    if o.consecutive_local_origin_failures.is_some_and(|n| n > 0)
        && o.split_external_local_origin_errors != Some(true)
    {
        error(
            out,
            format!("{p}.consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures has effect only with splitExternalLocalOriginErrors: true; set it",
        );
    }
    if let Some(v) = o.max_ejection_percent {
        check_percent_int(out, format!("{p}.maxEjectionPercent"), i64::from(v));
    }
    if let Some(v) = o.min_health_percent {
        check_percent_int(out, format!("{p}.minHealthPercent"), i64::from(v));
    }
    for (i, c) in o.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            error(
                out,
                format!("{p}.outlierDetectionHttpErrorCodes[{i}]"),
                format!("{c} is not an HTTP status code between 100 and 599"),
            );
        }
    }
}

/// Istio's `validateConnectionPool` (also used for the Sidecar's inbound pools).
pub(crate) fn check_connection_pool(
    out: &mut Vec<FieldIssue>,
    p: &str,
    c: &ConnectionPoolSettings,
) {
    if c.tcp.is_none() && c.http.is_none() {
        error(
            out,
            p,
            "connectionPool is empty; set tcp and/or http settings, or remove it",
        );
        return;
    }
    if let Some(h) = &c.http {
        let hp = format!("{p}.http");
        check_non_negative(
            out,
            format!("{hp}.http1MaxPendingRequests"),
            h.http1_max_pending_requests,
        );
        check_non_negative(out, format!("{hp}.http2MaxRequests"), h.http2_max_requests);
        check_non_negative(
            out,
            format!("{hp}.maxRequestsPerConnection"),
            h.max_requests_per_connection,
        );
        check_non_negative(out, format!("{hp}.maxRetries"), h.max_retries);
        check_non_negative(
            out,
            format!("{hp}.maxConcurrentStreams"),
            h.max_concurrent_streams,
        );
        check_duration(
            out,
            format!("{hp}.idleTimeout"),
            h.idle_timeout.as_ref(),
            MILLISECOND,
        );
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && h.use_client_protocol == Some(true)
        {
            error(
                out,
                format!("{hp}.useClientProtocol"),
                "useClientProtocol cannot be true when h2UpgradePolicy is UPGRADE; pick one",
            );
        }
        if let Some(k) = &h.http2_keep_alive {
            check_duration(
                out,
                format!("{hp}.http2KeepAlive.interval"),
                k.interval.as_ref(),
                MILLISECOND,
            );
            check_duration(
                out,
                format!("{hp}.http2KeepAlive.timeout"),
                k.timeout.as_ref(),
                MILLISECOND,
            );
        }
    }
    if let Some(t) = &c.tcp {
        let tp = format!("{p}.tcp");
        check_non_negative(out, format!("{tp}.maxConnections"), t.max_connections);
        check_duration(
            out,
            format!("{tp}.connectTimeout"),
            t.connect_timeout.as_ref(),
            MILLISECOND,
        );
        check_duration(
            out,
            format!("{tp}.maxConnectionDuration"),
            t.max_connection_duration.as_ref(),
            MILLISECOND,
        );
        check_duration(
            out,
            format!("{tp}.idleTimeout"),
            t.idle_timeout.as_ref(),
            Duration::ZERO,
        );
        if let Some(k) = &t.tcp_keepalive {
            check_duration(
                out,
                format!("{tp}.tcpKeepalive.time"),
                k.time.as_ref(),
                MILLISECOND,
            );
            check_duration(
                out,
                format!("{tp}.tcpKeepalive.interval"),
                k.interval.as_ref(),
                MILLISECOND,
            );
        }
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Istio's `validateLoadBalancer`, plus the CRD's one-of rules.
fn check_load_balancer(
    out: &mut Vec<FieldIssue>,
    p: &str,
    lb: &LoadBalancerSettings,
    has_outlier: bool,
) {
    let set = set_names(&[
        ("simple", lb.simple.is_some()),
        ("consistentHash", lb.consistent_hash.is_some()),
        ("backendUtilization", lb.backend_utilization.is_some()),
    ]);
    if set.len() > 1 {
        error(
            out,
            p,
            format!(
                "set only one of simple, consistentHash or backendUtilization (found {})",
                set.join(" and ")
            ),
        );
    }
    if let Some(ch) = &lb.consistent_hash {
        check_consistent_hash(out, &format!("{p}.consistentHash"), ch);
    }
    if let Some(bu) = &lb.backend_utilization {
        let bp = format!("{p}.backendUtilization");
        for (name, v) in [
            ("weightExpirationPeriod", &bu.weight_expiration_period),
            ("weightStabilizationPeriod", &bu.weight_stabilization_period),
            ("weightUpdatePeriod", &bu.weight_update_period),
        ] {
            check_duration(out, format!("{bp}.{name}"), v.as_ref(), Duration::ZERO);
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        check_locality_lb(out, &format!("{p}.localityLbSetting"), l, has_outlier);
    }
    check_duration(
        out,
        format!("{p}.warmupDurationSecs"),
        lb.warmup_duration_secs.as_ref(),
        MILLISECOND,
    );
    if let Some(w) = &lb.warmup {
        let wp = format!("{p}.warmup");
        if w.duration.is_empty() {
            error(
                out,
                format!("{wp}.duration"),
                "warmup.duration is required, e.g. \"60s\"",
            );
        } else {
            out.extend(crate::istio::validate::validate_duration(
                &format!("{wp}.duration"),
                &w.duration,
                MILLISECOND,
            ));
        }
        if let Some(v) = w.minimum_percent {
            check_percent_value(out, format!("{wp}.minimumPercent"), v);
        }
        if let Some(a) = w.aggression
            && (a < 0.0 || a.is_nan())
        {
            error(
                out,
                format!("{wp}.aggression"),
                format!("aggression {a} is negative; use 1.0 (linear) or more"),
            );
        }
    }
    if let Some(z) = &lb.zone_aware_lb_setting
        && z.min_cluster_size == Some(0)
    {
        error(
            out,
            format!("{p}.zoneAwareLbSetting.minClusterSize"),
            "minClusterSize must be at least 1",
        );
    }
}

fn check_consistent_hash(out: &mut Vec<FieldIssue>, chp: &str, ch: &ConsistentHashLb) {
    let keys = set_names(&[
        ("httpHeaderName", ch.http_header_name.is_some()),
        ("httpCookie", ch.http_cookie.is_some()),
        ("useSourceIp", ch.use_source_ip.is_some()),
        (
            "httpQueryParameterName",
            ch.http_query_parameter_name.is_some(),
        ),
    ]);
    if keys.len() > 1 {
        error(
            out,
            chp,
            format!(
                "set only one hash key: httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName (found {})",
                keys.join(" and ")
            ),
        );
    } else if keys.is_empty() {
        warning(
            out,
            chp,
            "consistentHash sets no hash key, so requests are not pinned to endpoints; set httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
        );
    }
    if ch.ring_hash.is_some() && ch.maglev.is_some() {
        error(out, chp, "set only one of ringHash or maglev");
    }
    if let Some(h) = &ch.http_header_name {
        check_header_name_case(out, format!("{chp}.httpHeaderName"), h, false);
    }
    if let Some(q) = &ch.http_query_parameter_name
        && q.is_empty()
    {
        error(
            out,
            format!("{chp}.httpQueryParameterName"),
            "httpQueryParameterName is empty; name the query parameter",
        );
    }
    if let Some(c) = &ch.http_cookie {
        let cp = format!("{chp}.httpCookie");
        if c.name.is_empty() {
            error(
                out,
                format!("{cp}.name"),
                "httpCookie.name is required: the cookie to hash on",
            );
        }
        check_duration(out, format!("{cp}.ttl"), c.ttl.as_ref(), Duration::ZERO);
        for (i, a) in c.attributes.iter().enumerate() {
            if a.name.is_empty() {
                error(
                    out,
                    format!("{cp}.attributes[{i}].name"),
                    "cookie attribute name is required",
                );
            }
        }
    }
    if ch.minimum_ring_size.is_some() {
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            error(
                out,
                format!("{chp}.minimumRingSize"),
                "set either minimumRingSize or ringHash/maglev, not both; move it to ringHash.minimumRingSize",
            );
        } else {
            warning(
                out,
                format!("{chp}.minimumRingSize"),
                "minimumRingSize is deprecated; use ringHash.minimumRingSize",
            );
        }
    }
    if let Some(m) = &ch.maglev {
        let f = format!("{chp}.maglev.tableSize");
        match m.table_size {
            None | Some(0) => error(
                out,
                f,
                "tableSize is required for maglev; use a prime number such as 65537",
            ),
            Some(n) if n >= 5_000_011 => error(
                out,
                f,
                format!(
                    "tableSize {n} is too large; maglev needs a prime below 5000011, e.g. 65537"
                ),
            ),
            Some(n) if !is_prime(n) => error(
                out,
                f,
                format!("tableSize {n} is not a prime number; maglev needs a prime, e.g. 65537"),
            ),
            Some(_) => {}
        }
    }
}

/// Istio's `validateLocalityLbSetting`.
fn check_locality_lb(out: &mut Vec<FieldIssue>, p: &str, l: &LocalityLbSetting, has_outlier: bool) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        error(out, p, "set only one of distribute or failover");
        return;
    }
    if !l.failover.is_empty() {
        for (i, label) in l.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&label.as_str()) {
                error(
                    out,
                    format!("{p}.failoverPriority[{i}]"),
                    format!(
                        "failover already orders by region; remove {label:?} from failoverPriority or remove failover"
                    ),
                );
            }
        }
    }
    let mut sources = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = format!("{p}.distribute[{i}]");
        sources.push((format!("{dp}.from"), d.from.as_str()));
        let mut total: u64 = 0;
        let mut targets = Vec::new();
        for (loc, w) in &d.to {
            if !(1..=100).contains(w) {
                error(
                    out,
                    format!("{dp}.to.{loc}"),
                    format!("locality weight {w} is not between 1 and 100"),
                );
            }
            total += u64::from(*w);
            targets.push((format!("{dp}.to.{loc}"), loc.as_str()));
        }
        if total != 100 {
            error(
                out,
                format!("{dp}.to"),
                format!("the weights in to sum to {total}; they must sum to 100"),
            );
        }
        check_localities(out, &targets);
    }
    check_localities(out, &sources);
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        warning(
            out,
            p,
            "failover needs outlierDetection in the same traffic policy to detect unhealthy endpoints; add outlierDetection",
        );
    }
    for (i, f) in l.failover.iter().enumerate() {
        let fp = format!("{p}.failover[{i}]");
        if f.from == f.to {
            error(
                out,
                &fp,
                format!(
                    "failover from and to are both {:?}; use different regions",
                    f.from
                ),
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            error(
                out,
                &fp,
                "failover takes regions only (no zone or subzone after '/')",
            );
        }
        if f.from.contains('*') || f.to.contains('*') {
            error(out, &fp, "failover regions cannot contain the '*' wildcard");
        }
    }
}

/// Istio's `validateLocalities`: `region[/zone[/subzone]]`, a single trailing `*`,
/// no overlaps.
fn check_localities(out: &mut Vec<FieldIssue>, items: &[(String, &str)]) {
    let mut seen: Vec<&str> = Vec::new();
    for (field, loc) in items {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            error(
                out,
                field,
                format!("locality {loc:?} may contain only one '*', at the end"),
            );
            continue;
        }
        let parts: Vec<&str> = loc.split('/').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            error(
                out,
                field,
                format!(
                    "locality {loc:?} is not valid; write region, region/zone or region/zone/subzone"
                ),
            );
            continue;
        }
        let overlaps = seen.iter().any(|s| {
            let (a, b) = (s.trim_end_matches('*'), loc.trim_end_matches('*'));
            *s == *loc
                || (s.ends_with('*') && loc.starts_with(a))
                || (loc.ends_with('*') && s.starts_with(b))
        });
        if overlaps {
            error(
                out,
                field,
                format!("locality {loc:?} overlaps with another locality in the same list"),
            );
        }
        seen.push(loc);
    }
}

/// Istio's `validateTLS` for client TLS settings.
fn check_client_tls(out: &mut Vec<FieldIssue>, p: &str, t: &ClientTlsSettings) {
    let mode = t.mode.unwrap_or_default();
    let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if t.insecure_skip_verify == Some(true) {
        if mode == ClientTlsMode::Simple
            && (has(&t.ca_certificates)
                || has(&t.credential_name)
                || !t.subject_alt_names.is_empty())
        {
            error(
                out,
                format!("{p}.insecureSkipVerify"),
                "insecureSkipVerify is true, so caCertificates, credentialName and subjectAltNames cannot be set; remove them or the flag",
            );
        }
        if mode == ClientTlsMode::Mutual
            && (has(&t.ca_certificates) || !t.subject_alt_names.is_empty())
        {
            error(
                out,
                format!("{p}.insecureSkipVerify"),
                "insecureSkipVerify is true, so caCertificates and subjectAltNames cannot be set; remove them or the flag",
            );
        }
    }
    let uses_secret =
        matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && has(&t.credential_name);
    if uses_secret {
        if has(&t.client_certificate)
            || has(&t.private_key)
            || has(&t.ca_certificates)
            || has(&t.ca_crl)
        {
            error(
                out,
                format!("{p}.credentialName"),
                "credentialName is set, so clientCertificate, privateKey, caCertificates and caCrl must not be: the secret provides them",
            );
        }
    } else if mode == ClientTlsMode::Mutual {
        for (name, v) in [
            ("clientCertificate", &t.client_certificate),
            ("privateKey", &t.private_key),
        ] {
            if !has(v) {
                error(
                    out,
                    format!("{p}.{name}"),
                    "MUTUAL mode needs clientCertificate and privateKey, or a credentialName",
                );
            }
        }
    } else if mode == ClientTlsMode::IstioMutual {
        let set = set_names(&[
            ("clientCertificate", has(&t.client_certificate)),
            ("privateKey", has(&t.private_key)),
            ("caCertificates", has(&t.ca_certificates)),
            ("credentialName", has(&t.credential_name)),
        ]);
        if !set.is_empty() {
            warning(
                out,
                p,
                format!(
                    "ISTIO_MUTUAL uses Istio's own certificates, so {} is ignored; remove it, or use MUTUAL",
                    set.join(", ")
                ),
            );
        }
    }
}

/// Istio's `validateTunnelSettings`.
fn check_tunnel(out: &mut Vec<FieldIssue>, p: &str, t: &TunnelSettings) {
    if let Some(proto) = &t.protocol
        && proto != "CONNECT"
        && proto != "POST"
    {
        error(
            out,
            format!("{p}.protocol"),
            format!("tunnel protocol {proto:?} is not supported; use \"CONNECT\" or \"POST\""),
        );
    }
    if t.target_host.is_empty() {
        error(
            out,
            format!("{p}.targetHost"),
            "targetHost is required: the host name or IP to tunnel to",
        );
    } else {
        let ip_part = t.target_host.split('/').next().unwrap_or_default();
        if validate_fqdn(&t.target_host).is_err() && !is_ip(ip_part) {
            error(
                out,
                format!("{p}.targetHost"),
                format!(
                    "targetHost {:?} is not a valid host name or IP address",
                    t.target_host
                ),
            );
        }
    }
    if t.target_port == 0 {
        error(
            out,
            format!("{p}.targetPort"),
            "targetPort is required: the port to tunnel to",
        );
    } else {
        check_port(out, format!("{p}.targetPort"), t.target_port);
    }
}
