use crate::Level::{Error, Warning};
use crate::istio::testing::{assert_clean, assert_issue, check, check_yaml};

const KIND: &str = "VirtualService";

#[test]
fn a_simple_route_is_clean() {
    let d = check(
        KIND,
        "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews, subset: v1}\n",
    );
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn empty_hosts_make_a_delegate_without_gateways_tls_or_tcp() {
    let d = check(
        KIND,
        "gateways: [gw]\nhttp:\n- route:\n  - destination: {host: reviews}\ntcp:\n- route:\n  - destination: {host: db}\n",
    );
    assert_issue(&d, Error, "spec.gateways", "delegate");
    assert_issue(&d, Error, "spec.tcp", "only have http routes");
    let d = check(KIND, "http:\n- route:\n  - destination: {host: reviews}\n");
    assert_clean(&d);
}

#[test]
fn no_routes_at_all() {
    let d = check(KIND, "hosts: [reviews]\n");
    assert_issue(&d, Error, "spec", "no http, tcp or tls routes");
}

#[test]
fn host_rules() {
    let d = check(
        KIND,
        "hosts: [\"*\", \"bad_host\", reviews, reviews]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.hosts[0]",
        "not allowed in a VirtualService that applies to the mesh",
    );
    assert_issue(&d, Error, "spec.hosts[1]", "\"bad_host\"");
    // Duplicates are checked only once every host is valid.
    let d = check(
        KIND,
        "hosts: [reviews, \"*.example.com\", a.example.com]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.hosts[2]",
        "overlaps host \"*.example.com\"",
    );
    // `*` is fine on a gateway-only VirtualService; IPs are fine hosts.
    let d = check(
        KIND,
        "hosts: [\"*\"]\ngateways: [istio-system/gw]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
    );
    assert_clean(&d);
    let d = check(
        KIND,
        "hosts: [10.0.0.1]\ntcp:\n- route:\n  - destination: {host: db}\n",
    );
    assert_clean(&d);
}

#[test]
fn gateway_names() {
    let d = check(
        KIND,
        "hosts: [a.com]\ngateways: [mesh, \"ns/\", \"Bad_Gw\", gw.istio-system, \"ns/gw.x\"]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
    );
    assert_issue(&d, Error, "spec.gateways[1]", "empty namespace or name");
    assert_issue(&d, Error, "spec.gateways[2]", "\"Bad_Gw\"");
    assert_issue(&d, Warning, "spec.gateways[3]", "\"istio-system/gw\"");
    assert_issue(&d, Error, "spec.gateways[4]", "invalid name");
}

#[test]
fn a_rule_needs_an_action_and_route_excludes_redirect() {
    let d = check(KIND, "hosts: [r]\nhttp:\n- timeout: 5s\n");
    assert_issue(
        &d,
        Error,
        "spec.http[0]",
        "route, redirect, directResponse or delegate",
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- redirect: {uri: /x}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].redirect",
        "both route and redirect",
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- directResponse: {status: 200}\n  redirect: {uri: /x}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].directResponse",
        "directResponse and redirect",
    );
}

#[test]
fn destinations_need_hosts_and_valid_ports() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- route:\n  - destination: {subset: v1, port: {number: 70000}}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].route[0].destination.host",
        "host is required",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].route[0].destination.port.number",
        "70000",
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: \"v1.0\"}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].route[0].destination.subset",
        "\"v1.0\"",
    );
}

#[test]
fn weights() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: v1}\n    weight: -10\n  - destination: {host: r, subset: v2}\n    weight: 110\n",
    );
    assert_issue(&d, Error, "spec.http[0].route[0].weight", "negative");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: v1}\n  - destination: {host: r, subset: v2}\n",
    );
    assert_issue(&d, Error, "spec.http[0].route", "total weight");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: v1}\n    weight: 1\n  - destination: {host: r, subset: v2}\n    weight: 3\n",
    );
    assert_issue(
        &d,
        Warning,
        "spec.http[0].route",
        "weights sum to 4, not 100",
    );
    assert!(!d.iter().any(|x| x.level == Error), "{d:#?}");
    // One destination: its weight does not matter.
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r}\n    weight: 30\n",
    );
    assert_clean(&d);
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn timeouts_and_retries() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- timeout: 10\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].timeout", "invalid type");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- timeout: 5 s\n  retries: {attempts: -1, perTryTimeout: 0.1ms, retryOn: \"5xx,bogus,503\"}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].timeout", "not a valid duration");
    assert_issue(&d, Error, "spec.http[0].retries.attempts", "negative");
    assert_issue(
        &d,
        Error,
        "spec.http[0].retries.perTryTimeout",
        "minimum of 1ms",
    );
    assert_issue(&d, Error, "spec.http[0].retries.retryOn", "\"bogus\"");
    assert_eq!(
        d.iter()
            .filter(|x| x.field.as_deref() == Some("spec.http[0].retries.retryOn"))
            .count(),
        1,
        "{d:#?}"
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- timeout: 1h30m\n  retries: {attempts: 3, perTryTimeout: 2s, retryOn: \"gateway-error,connect-failure,refused-stream\"}\n  route:\n  - destination: {host: r}\n",
    );
    assert!(d.is_empty(), "{d:#?}");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- retries: {attempts: 0, retryOn: 5xx}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(
        &d,
        Warning,
        "spec.http[0].retries.attempts",
        "disables retries",
    );
}

#[test]
fn faults() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- fault: {}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].fault", "delay and/or an abort");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- fault:\n    abort: {httpStatus: 700, percentage: {value: 120}}\n    delay: {percentage: {value: 50}}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].fault.abort.httpStatus", "700");
    assert_issue(
        &d,
        Error,
        "spec.http[0].fault.abort.percentage.value",
        "120",
    );
    assert_issue(&d, Error, "spec.http[0].fault.delay", "fixedDelay");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- fault:\n    abort: {grpcStatus: NOPE}\n    delay: {fixedDelay: 0s}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].fault.abort.grpcStatus", "\"NOPE\"");
    assert_issue(
        &d,
        Error,
        "spec.http[0].fault.delay.fixedDelay",
        "minimum of 1ms",
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- fault:\n    abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].fault.abort", "only one of");
}

#[test]
fn mirrors() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- mirror: {subset: v2}\n  mirrorPercentage: {value: 101}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].mirror.host", "host is required");
    assert_issue(&d, Error, "spec.http[0].mirrorPercentage.value", "101");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- mirror: {host: m}\n  mirrors:\n  - destination: {host: m2}\n    percentage: {value: -1}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].mirror", "not both");
    assert_issue(&d, Error, "spec.http[0].mirrors[0].percentage.value", "-1");
}

#[test]
fn rewrites_and_redirects() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- rewrite: {uri: /a, uriRegexRewrite: {match: \"^/b\", rewrite: /c}}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].rewrite",
        "only one of uri or uriRegexRewrite",
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- rewrite: {uriRegexRewrite: {match: \"(/b\", rewrite: /c}}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "unclosed group",
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- redirect: {uri: /new, redirectCode: 304, scheme: ftp, port: 8080, derivePort: FROM_REQUEST_PORT}\n",
    );
    assert_issue(&d, Error, "spec.http[0].redirect.redirectCode", "304");
    assert_issue(&d, Error, "spec.http[0].redirect.scheme", "\"ftp\"");
    assert_issue(
        &d,
        Error,
        "spec.http[0].redirect",
        "only one of port or derivePort",
    );
    let d = check(KIND, "hosts: [r]\nhttp:\n- redirect: {redirectCode: 302}\n");
    assert_issue(&d, Error, "spec.http[0].redirect", "at least one of");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- rewrite: {authority: new}\n  headers: {request: {set: {Host: other}}}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].rewrite.authority",
        "one place only",
    );
}

#[test]
fn string_matches_and_regexes() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- match:\n  - uri: {prefix: /a, exact: /b}\n    headers:\n      x-user: {regex: \"(abc\"}\n      \"Bad Header\": {exact: x}\n      X-Upper: {exact: y}\n      x-present: {}\n    queryParams:\n      q: {regex: \"[\"}\n    method: {prefix: \"\"}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].match[0].uri",
        "only one of exact, prefix or regex",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].match[0].headers.x-user.regex",
        "regex \"(abc\" is not valid: unclosed group; fix the pattern (RE2 syntax)",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].match[0].headers.Bad Header",
        "not valid",
    );
    assert_issue(
        &d,
        Warning,
        "spec.http[0].match[0].headers.X-Upper",
        "\"x-upper\"",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].match[0].queryParams.q.regex",
        "unclosed character class",
    );
    assert_issue(&d, Error, "spec.http[0].match[0].method.prefix", "empty");
    assert!(
        !d.iter()
            .any(|x| x.field.as_deref() == Some("spec.http[0].match[0].headers.x-present")),
        "{d:#?}"
    );
}

#[test]
fn match_ports_labels_namespaces() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- match:\n  - port: 99999\n    sourceLabels: {\"bad key!\": v}\n    sourceNamespace: Not_A_Namespace\n    gateways: [\"/x\"]\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].match[0].port", "99999");
    assert_issue(
        &d,
        Error,
        "spec.http[0].match[0].sourceLabels.bad key!",
        "label key",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].match[0].sourceNamespace",
        "namespace",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].match[0].gateways[0]",
        "empty namespace",
    );
}

#[test]
fn cors() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- corsPolicy:\n    allowOrigins: [{regex: \"*.example.com\"}, {}]\n    allowMethods: [GET, FETCH]\n    allowHeaders: [\"*\", \"bad header\"]\n    maxAge: 1500ms\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].corsPolicy.allowOrigins[0].regex",
        "repetition operator missing expression",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].corsPolicy.allowOrigins[1]",
        "non-empty exact, prefix or regex",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].corsPolicy.allowMethods[1]",
        "\"FETCH\"",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].corsPolicy.allowHeaders[1]",
        "not valid",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].corsPolicy.maxAge",
        "whole number of seconds",
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- corsPolicy:\n    allowOrigins: [{exact: \"https://example.com\"}]\n    allowHeaders: [X-Foo-Bar]\n    maxAge: 24h\n  route:\n  - destination: {host: r}\n",
    );
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn direct_responses() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- directResponse: {body: {string: hi, bytes: \"aGk=\"}}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].directResponse.status",
        "set status",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].directResponse.body",
        "only one of string or bytes",
    );
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- directResponse: {status: 503, body: {bytes: \"not base64!\"}}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].directResponse.body.bytes",
        "base64",
    );
}

#[test]
fn delegates() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- delegate: {namespace: ns}\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.http[0].delegate.name", "required");
    assert_issue(&d, Error, "spec.http[0].route", "cannot also set route");
    let d = check(KIND, "http:\n- delegate: {name: other}\n");
    assert_issue(&d, Error, "spec.http[0].delegate", "cannot delegate again");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- delegate: {name: reviews-delegate, namespace: ns}\n",
    );
    assert_clean(&d);
}

#[test]
fn tls_routes() {
    let d = check(
        KIND,
        "hosts: [\"*.example.com\"]\ntls:\n- route:\n  - destination: {host: r}\n- match:\n  - port: 443\n  route:\n  - destination: {host: r}\n- match:\n  - sniHosts: [a.example.com, other.org, 10.0.0.1]\n    destinationSubnets: [10.0.0.0/33]\n",
    );
    assert_issue(&d, Error, "spec.tls[0].match", "at least one match");
    assert_issue(&d, Error, "spec.tls[1].match[0].sniHosts", "required");
    assert_issue(
        &d,
        Error,
        "spec.tls[2].match[0].sniHosts[1]",
        "\"other.org\" is not covered",
    );
    assert_issue(
        &d,
        Warning,
        "spec.tls[2].match[0].sniHosts[2]",
        "IP address",
    );
    assert_issue(
        &d,
        Error,
        "spec.tls[2].match[0].destinationSubnets[0]",
        "CIDR",
    );
    assert_issue(&d, Error, "spec.tls[2].route", "at least one route");
    assert!(
        !d.iter()
            .any(|x| x.field.as_deref() == Some("spec.tls[2].match[0].sniHosts[0]")),
        "{d:#?}"
    );
}

#[test]
fn tcp_routes() {
    let d = check(
        KIND,
        "hosts: [db]\ntcp:\n- match:\n  - port: 0\n    sourceSubnet: nope\n- route:\n  - destination: {host: db, port: {number: 3306}}\n    weight: -1\n",
    );
    assert_issue(&d, Error, "spec.tcp[0].match[0].sourceSubnet", "\"nope\"");
    assert_issue(&d, Error, "spec.tcp[0].route", "at least one route");
    assert_issue(&d, Error, "spec.tcp[1].route[0].weight", "negative");
}

#[test]
fn jwt_claim_routes_need_a_gateway() {
    let spec = "http:\n- match:\n  - headers:\n      \"@request.auth.claims.group\": {exact: admin}\n  route:\n  - destination: {host: r}\n";
    let d = check(KIND, &format!("hosts: [r]\n{spec}"));
    assert_issue(
        &d,
        Error,
        "spec.http[0].match[0].headers.@request.auth.claims.group",
        "only on gateways",
    );
    let d = check(
        KIND,
        &format!("hosts: [r.example.com]\ngateways: [gw]\n{spec}"),
    );
    assert_clean(&d);
}

#[test]
fn unreachable_rules_are_warnings() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r}\n- match: [{uri: {prefix: /a}}]\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Warning, "spec.http[1]", "never used");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- match: [{uri: {prefix: /a}}]\n  route:\n  - destination: {host: r}\n- match: [{uri: {prefix: /a}, name: again}]\n  route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Warning, "spec.http[1].match[0]", "same match");
    assert_issue(&d, Warning, "spec.http[1]", "repeat earlier rules");
}

#[test]
fn export_to() {
    let d = check(
        KIND,
        "hosts: [r]\nexportTo: [\".\", \"*\"]\nhttp:\n- route:\n  - destination: {host: r}\n",
    );
    assert_issue(&d, Error, "spec.exportTo", "\"*\"");
}

#[test]
fn malformed_input_reports_the_path() {
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r}\n    weight: \"fifty\"\n",
    );
    assert_issue(&d, Error, "spec.http[0].route[0].weight", "invalid type");
    let d = check(KIND, "hosts: reviews\nhttp: []\n");
    assert_issue(&d, Error, "spec.hosts", "expected a sequence");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- rout:\n  - destination: {host: r}\n",
    );
    let unknown = d
        .iter()
        .find(|x| x.field.as_deref() == Some("spec.http[0].rout"))
        .unwrap_or_else(|| panic!("{d:#?}"));
    assert_eq!(unknown.code, "ISM0002");
    let d = check(
        KIND,
        "hosts: [r]\nhttp:\n- redirect: {uri: /x, derivePort: SOMEWHERE}\n",
    );
    assert_issue(
        &d,
        Error,
        "spec.http[0].redirect.derivePort",
        "unknown variant `SOMEWHERE`",
    );
    // Deprecated snake_case field of the CRD is known.
    let d = check_yaml(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [r]\n  http:\n  - mirror: {host: m}\n    mirror_percent: 5\n    route:\n    - destination: {host: r}\n",
    );
    assert!(d.is_empty(), "{d:#?}");
}
