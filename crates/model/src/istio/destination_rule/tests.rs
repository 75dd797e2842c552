use crate::Level::{Error, Warning};
use crate::istio::testing::{assert_clean, assert_issue, check};

const KIND: &str = "DestinationRule";

#[test]
fn host_is_required_and_valid() {
    let d = check(KIND, "subsets: []\n");
    assert_issue(&d, Error, "spec.host", "host is required");
    let d = check(KIND, "host: \"bad host\"\n");
    assert_issue(&d, Error, "spec.host", "\"bad host\"");
    assert!(check(KIND, "host: \"*.example.com\"\n").is_empty());
}

#[test]
fn subsets() {
    let d = check(
        KIND,
        "host: reviews\nsubsets:\n- name: v1\n  labels: {version: v1}\n- labels: {version: v2}\n- name: v1\n  labels: {version: v3}\n- name: V_2\n- name: v4\n  labels: {version: \"\"}\n",
    );
    assert_issue(&d, Error, "spec.subsets[1].name", "required");
    assert_issue(
        &d,
        Error,
        "spec.subsets[2].name",
        "duplicate subset name \"v1\" (also subsets[0]); subset names must be unique",
    );
    assert_issue(&d, Error, "spec.subsets[3].name", "\"V_2\"");
    assert_issue(&d, Warning, "spec.subsets[4].labels.version", "empty value");
}

#[test]
fn traffic_policy_must_set_something() {
    let d = check(KIND, "host: r\ntrafficPolicy: {}\n");
    assert_issue(&d, Error, "spec.trafficPolicy", "trafficPolicy is empty");
    let d = check(
        KIND,
        "host: r\nsubsets:\n- name: v1\n  trafficPolicy:\n    connectionPool: {}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.subsets[0].trafficPolicy.connectionPool",
        "connectionPool is empty",
    );
}

#[test]
fn load_balancer_one_of() {
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  loadBalancer:\n    simple: ROUND_ROBIN\n    consistentHash: {httpHeaderName: x-user, useSourceIp: true, ringHash: {minimumRingSize: 1024}, maglev: {tableSize: 65537}}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer",
        "only one of simple, consistentHash",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "only one hash key",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "ringHash or maglev",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {maglev: {tableSize: 1000}}\n",
    );
    assert_issue(
        &d,
        Warning,
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "no hash key",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "not a prime",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpCookie: {ttl: 0s}, minimumRingSize: 10}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "required",
    );
    assert_issue(
        &d,
        Warning,
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        "deprecated",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpCookie: {name: user, ttl: 1h}, maglev: {tableSize: 65537}}\n",
    );
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn locality_settings() {
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - from: us-west/zone1/*\n        to: {\"us-west/zone1/*\": 80, \"us-west/zone2/*\": 30}\n      failover:\n      - {from: us-west, to: us-east}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "only one of distribute or failover",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - from: us-west/*/zone1\n        to: {\"us-west/zone1/*\": 80, \"us-west/zone2/*\": 30}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "sum to 110",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from",
        "only one '*', at the end",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      failover:\n      - {from: us-west, to: us-west}\n      - {from: us-west/z1, to: \"eu-*\"}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        "different regions",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1]",
        "regions only",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1]",
        "wildcard",
    );
    assert_issue(
        &d,
        Warning,
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "outlierDetection",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 5}\n  loadBalancer:\n    simple: ROUND_ROBIN\n    localityLbSetting:\n      enabled: true\n      failover:\n      - {from: us-west, to: us-east}\n",
    );
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn connection_pool_and_outlier_detection() {
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: -1, connectTimeout: 30x, idleTimeout: 0s}\n    http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true, idleTimeout: 0s, maxRetries: -3}\n  outlierDetection: {consecutiveErrors: 5, interval: 1s, baseEjectionTime: -3m, maxEjectionPercent: 150, minHealthPercent: -1, consecutiveLocalOriginFailures: 2}\n",
    );
    let p = "spec.trafficPolicy";
    assert_issue(
        &d,
        Error,
        &format!("{p}.connectionPool.tcp.maxConnections"),
        "negative",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}.connectionPool.tcp.connectTimeout"),
        "unknown unit \"x\"",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}.connectionPool.http.useClientProtocol"),
        "UPGRADE",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}.connectionPool.http.idleTimeout"),
        "minimum of 1ms",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}.connectionPool.http.maxRetries"),
        "negative",
    );
    assert_issue(
        &d,
        Warning,
        &format!("{p}.outlierDetection.consecutiveErrors"),
        "deprecated",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}.outlierDetection.baseEjectionTime"),
        "negative",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}.outlierDetection.maxEjectionPercent"),
        "150",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}.outlierDetection.minHealthPercent"),
        "-1",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}.outlierDetection.consecutiveLocalOriginFailures"),
        "splitExternalLocalOriginErrors",
    );
    assert!(
        !d.iter().any(
            |x| x.field.as_deref() == Some("spec.trafficPolicy.connectionPool.tcp.idleTimeout")
        ),
        "{d:#?}"
    );
}

#[test]
fn client_tls() {
    let d = check(KIND, "host: r\ntrafficPolicy:\n  tls: {mode: MUTUAL}\n");
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.tls.clientCertificate",
        "MUTUAL",
    );
    assert_issue(&d, Error, "spec.trafficPolicy.tls.privateKey", "MUTUAL");
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  tls: {mode: MUTUAL, credentialName: client-cert}\n",
    );
    assert!(d.is_empty(), "{d:#?}");
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  tls: {mode: SIMPLE, credentialName: c, caCertificates: /etc/ca.pem}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.tls.credentialName",
        "secret provides them",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem}\n",
    );
    assert_issue(
        &d,
        Warning,
        "spec.trafficPolicy.tls",
        "clientCertificate is ignored",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.tls.insecureSkipVerify",
        "cannot be set",
    );
    let d = check(KIND, "host: r\ntrafficPolicy:\n  tls: {mode: STRICTEST}\n");
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.tls.mode",
        "unknown variant `STRICTEST`",
    );
}

#[test]
fn port_level_settings() {
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n    loadBalancer: {simple: RANDOM}\n  - port: {number: 80}\n    tls: {mode: SIMPLE}\n  - loadBalancer: {simple: RANDOM}\n  - port: {number: 70000}\n",
    );
    let p = "spec.trafficPolicy.portLevelSettings";
    assert_issue(
        &d,
        Error,
        &format!("{p}[1].port.number"),
        "port 80 already has settings",
    );
    assert_issue(
        &d,
        Error,
        &format!("{p}[2].port.number"),
        "port is required",
    );
    assert_issue(&d, Error, &format!("{p}[3].port.number"), "70000");
    assert_issue(&d, Error, &format!("{p}[3]"), "set nothing");
}

#[test]
fn tunnel_and_proxy_protocol() {
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  tunnel: {protocol: GET, targetHost: \"bad host\", targetPort: 0}\n  proxyProtocol: {version: V2}\n",
    );
    assert_issue(&d, Error, "spec.trafficPolicy", "tunnel or proxyProtocol");
    assert_issue(&d, Error, "spec.trafficPolicy.tunnel.protocol", "\"GET\"");
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.tunnel.targetHost",
        "not a valid host",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.tunnel.targetPort",
        "required",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  tunnel: {targetHost: 10.0.0.1, targetPort: 8443}\n",
    );
    assert_clean(&d);
}

#[test]
fn export_to_and_workload_selector() {
    let d = check(KIND, "host: r\nexportTo: [\".\", \"*\"]\n");
    assert_issue(&d, Error, "spec.exportTo", "\"*\"");
    let d = check(
        KIND,
        "host: r\nexportTo: [other]\nworkloadSelector:\n  matchLabels: {app: \"*\"}\n",
    );
    assert_issue(&d, Error, "spec.exportTo", "own namespace");
    assert_issue(
        &d,
        Error,
        "spec.workloadSelector.matchLabels.app",
        "wildcards",
    );
    let d = check(KIND, "host: r\nworkloadSelector: {}\n");
    assert_issue(
        &d,
        Warning,
        "spec.workloadSelector.matchLabels",
        "every workload",
    );
}

#[test]
fn malformed_input() {
    let d = check(KIND, "host: r\nsubsets: {name: v1}\n");
    assert_issue(&d, Error, "spec.subsets", "expected a sequence");
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  loadBalancer: {simple: FASTEST}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.loadBalancer.simple",
        "unknown variant `FASTEST`",
    );
    let d = check(
        KIND,
        "host: r\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: -1}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.trafficPolicy.outlierDetection.consecutive5xxErrors",
        "invalid value",
    );
}
