//! `isthmus analyze`: every finding, triggered by a small fixture, next to a
//! near-identical fixture that doesn't trigger it.
//!
//! Most tests analyze Istio config files (`paths`) against a one-cluster mesh whose
//! manifest directory has Services and workloads in namespaces `bookinfo` and
//! `istio-system`; some analyze `paths` alone, without a mesh.

use std::path::{Path, PathBuf};

use isthmus_analyze::{Analysis, analyze, render};
use isthmus_model::{Diagnostic, Level, MeshConfig};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Fixtures

const MESH_YAML: &str = "\
meshID: test-mesh
clusters:
- name: cluster1
  network: network1
  source:
    manifests: cluster1
";

/// The workloads of cluster1: Services reviews and ratings in `bookinfo`, a reviews
/// Deployment, an ingress gateway Pod, and an egress gateway that is only a Deployment.
const WORKLOADS: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
  labels: {app: reviews}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080}
---
apiVersion: v1
kind: Service
metadata:
  name: ratings
  namespace: bookinfo
spec:
  selector: {app: ratings}
  ports:
  - {name: http, port: 9080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  namespace: bookinfo
spec:
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      labels: {app: reviews, version: v1}
    spec:
      containers:
      - {name: reviews, image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.3}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: egress-gw
  namespace: istio-system
spec:
  selector:
    matchLabels: {app: egress-gw}
  template:
    metadata:
      labels: {app: egress-gw, istio: egressgateway}
    spec:
      containers:
      - {name: istio-proxy, image: docker.io/istio/proxyv2:1.27.0}
---
apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-5d8f7
  namespace: istio-system
  labels: {app: istio-ingressgateway, istio: ingressgateway}
spec:
  containers:
  - {name: istio-proxy, image: docker.io/istio/proxyv2:1.27.0}
";

/// One Istio object: `spec` is unindented YAML. The spec's first line is line 7.
fn obj(kind: &str, ns: &str, name: &str, spec: &str) -> String {
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n"
    );
    for line in spec.lines() {
        s.push_str("  ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// Documents joined into one YAML stream.
fn docs(d: &[&str]) -> String {
    d.join("---\n")
}

/// The DestinationRule of reviews, with subsets v1 and v2.
fn dr_reviews() -> String {
    obj(
        "DestinationRule",
        "bookinfo",
        "reviews",
        "host: reviews\nsubsets:\n- name: v1\n  labels: {version: v1}\n- name: v2\n  labels: {version: v2}\n",
    )
}

/// A VirtualService for reviews in `bookinfo` with one HTTP route whose destinations
/// are `route` (unindented YAML list items).
fn vs_reviews(route: &str) -> String {
    let mut spec = String::from("hosts: [reviews]\nhttp:\n- route:\n");
    for line in route.lines() {
        spec.push_str("  ");
        spec.push_str(line);
        spec.push('\n');
    }
    obj("VirtualService", "bookinfo", "reviews", &spec)
}

/// The ingress Gateway `istio-system/ingress`, selecting the ingress gateway Pod.
fn gateway(selector: &str, port: &str) -> String {
    obj(
        "Gateway",
        "istio-system",
        "ingress",
        &format!(
            "selector: {selector}\nservers:\n- port: {{number: {port}, name: http, protocol: HTTP}}\n  hosts: [\"*\"]\n"
        ),
    )
}

/// A temporary mesh (mesh.yaml + cluster1/workloads.yaml) and config files beside it.
struct Env {
    dir: TempDir,
    mesh: MeshConfig,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cluster1")).unwrap();
        std::fs::write(dir.path().join("cluster1/workloads.yaml"), WORKLOADS).unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), MESH_YAML).unwrap();
        let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
        Self { dir, mesh }
    }

    /// Writes `text` to `name` (relative to the temp dir) and returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes the files and analyzes them against the mesh.
    fn analyze(&self, files: &[(&str, &str)]) -> Analysis {
        let paths: Vec<PathBuf> = files.iter().map(|(n, t)| self.write(n, t)).collect();
        analyze(Some(&self.mesh), &paths).unwrap()
    }
}

/// Writes the files into a fresh temp dir and analyzes them without a mesh.
fn analyze_alone(files: &[(&str, &str)]) -> (TempDir, Analysis) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(n, t)| {
            let p = dir.path().join(n);
            std::fs::write(&p, t).unwrap();
            p
        })
        .collect();
    let a = analyze(None, &paths).unwrap();
    (dir, a)
}

// ---------------------------------------------------------------------------
// Assertions

fn show(a: &Analysis) -> String {
    a.findings.iter().map(|d| format!("  {d}\n")).collect()
}

/// What a finding must be.
struct Want<'a> {
    code: &'a str,
    level: Level,
    /// (kind, namespace, name); None: the finding names no resource.
    resource: Option<(&'a str, &'a str, &'a str)>,
    field: Option<&'a str>,
    /// Each must appear in the message.
    words: &'a [&'a str],
    /// The name of the file reported.
    file: &'a str,
}

/// Asserts exactly one finding with the wanted code, resource and field, and that its
/// level, message and file are as wanted. Returns it.
#[track_caller]
fn expect<'a>(a: &'a Analysis, w: &Want<'_>) -> &'a Diagnostic {
    let same = |d: &&Diagnostic| {
        d.code == w.code
            && d.field.as_deref() == w.field
            && d.resource.as_ref().map(|r| {
                (
                    r.kind.as_str(),
                    r.namespace.as_deref().unwrap_or(""),
                    r.name.as_str(),
                )
            }) == w.resource
    };
    let hits: Vec<&Diagnostic> = a.findings.iter().filter(same).collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one [{}] about {:?} at {:?}; got:\n{}",
        w.code,
        w.resource,
        w.field,
        show(a)
    );
    let d = hits[0];
    assert_eq!(d.level, w.level, "{d}");
    for word in w.words {
        assert!(d.message.contains(word), "{word:?} not in: {d}");
    }
    let file = d.file.as_deref().and_then(Path::file_name);
    assert_eq!(file, Some(w.file.as_ref()), "{d}");
    assert!(d.document.is_some(), "{d}");
    assert!(d.line.is_some_and(|l| l >= 1), "{d}");
    d
}

/// Asserts the analysis found nothing at all.
#[track_caller]
fn assert_clean(a: &Analysis) {
    assert!(
        a.findings.is_empty(),
        "expected no findings; got:\n{}",
        show(a)
    );
    assert!(!a.has_errors());
}

// ---------------------------------------------------------------------------
// The fixtures themselves are clean

#[test]
fn the_fixture_mesh_is_clean() {
    let env = Env::new();
    let a = analyze(Some(&env.mesh), &[]).unwrap();
    assert_clean(&a);
    assert_eq!(a.objects, 5);
    let a = env.analyze(&[
        ("dr.yaml", &dr_reviews()),
        (
            "vs.yaml",
            &vs_reviews("- destination: {host: reviews, subset: v1}\n"),
        ),
        ("gw.yaml", &gateway("{istio: ingressgateway}", "80")),
    ]);
    assert_clean(&a);
    assert_eq!(a.objects, 8);
}

// ---------------------------------------------------------------------------
// Per-document findings

#[test]
fn malformed_yaml() {
    let env = Env::new();
    let good = vs_reviews("- destination: {host: reviews, subset: v1}\n");
    // Document 2 of the file: its spec's first line (`hosts`) is line 7 of it.
    let broken = good.replace("hosts: [reviews]", "hosts: [reviews");
    let text = docs(&[&dr_reviews(), &broken]);
    let a = env.analyze(&[("broken.yaml", &text)]);
    let d = expect(
        &a,
        &Want {
            code: "ISM0001",
            level: Level::Error,
            resource: None,
            field: None,
            words: &["not valid YAML"],
            file: "broken.yaml",
        },
    );
    let dr_lines = dr_reviews().lines().count();
    let doc_start = dr_lines + 2;
    assert_eq!(d.document, Some(1));
    assert!(
        (doc_start + 6..=doc_start + 9).contains(&d.line.unwrap()),
        "line {:?}, document starts at {doc_start}",
        d.line
    );
    assert!(a.has_errors());
    // The DestinationRule of the same file was still read.
    assert_eq!(a.objects, 6, "{}", show(&a));
    assert_eq!(a.findings.len(), 1, "{}", show(&a));

    let a = env.analyze(&[("broken.yaml", &docs(&[&dr_reviews(), &good]))]);
    assert_clean(&a);
}

#[test]
fn unknown_field() {
    let env = Env::new();
    let text =
        vs_reviews("- destination: {host: reviews, subset: v1}\n").replace("- route:", "- rout:");
    let a = env.analyze(&[("dr.yaml", &dr_reviews()), ("vs.yaml", &text)]);
    expect(
        &a,
        &Want {
            code: "ISM0002",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].rout"),
            words: &["unknown field \"rout\"", "VirtualService"],
            file: "vs.yaml",
        },
    );
    let a = env.analyze(&[
        ("dr.yaml", &dr_reviews()),
        (
            "vs.yaml",
            &vs_reviews("- destination: {host: reviews, subset: v1}\n"),
        ),
    ]);
    assert_clean(&a);
}

#[test]
fn wrong_type() {
    let env = Env::new();
    let a = env.analyze(&[
        ("dr.yaml", &dr_reviews()),
        (
            "vs.yaml",
            &vs_reviews("- destination: {host: reviews, subset: v1}\n  weight: \"fifty\"\n"),
        ),
    ]);
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].route[0].weight"),
            words: &["invalid type", "fifty"],
            file: "vs.yaml",
        },
    );
    let a = env.analyze(&[
        ("dr.yaml", &dr_reviews()),
        (
            "vs.yaml",
            &vs_reviews("- destination: {host: reviews, subset: v1}\n  weight: 100\n"),
        ),
    ]);
    assert_clean(&a);
}

#[test]
fn bad_enum_value() {
    let env = Env::new();
    let dr = |mode: &str| {
        obj(
            "DestinationRule",
            "bookinfo",
            "ratings",
            &format!("host: ratings\ntrafficPolicy:\n  tls:\n    mode: {mode}\n"),
        )
    };
    let a = env.analyze(&[("ratings-dr.yaml", &dr("STRICTEST"))]);
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Error,
            resource: Some(("DestinationRule", "bookinfo", "ratings")),
            field: Some("spec.trafficPolicy.tls.mode"),
            words: &["unknown variant", "STRICTEST", "ISTIO_MUTUAL"],
            file: "ratings-dr.yaml",
        },
    );
    assert_clean(&env.analyze(&[("ratings-dr.yaml", &dr("SIMPLE"))]));
}

fn service(port: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: details\n  namespace: bookinfo\nspec:\n  selector: {{app: details}}\n  ports:\n  - name: http\n    port: {port}\n"
    )
}

#[test]
fn invalid_service_port() {
    let env = Env::new();
    for port in ["0", "70000"] {
        let a = env.analyze(&[("details.yaml", &service(port))]);
        let d = expect(
            &a,
            &Want {
                code: "IST0106",
                level: Level::Error,
                resource: Some(("Service", "bookinfo", "details")),
                field: Some("spec.ports[0].port"),
                words: &[&format!("port {port} "), "between 1 and 65535"],
                file: "details.yaml",
            },
        );
        assert_eq!(d.line, Some(1));
    }
    assert_clean(&env.analyze(&[("details.yaml", &service("9080"))]));
}

#[test]
fn invalid_service_port_in_a_cluster_directory() {
    // The same finding from the mesh's own manifests, not from `paths`.
    let env = Env::new();
    env.write("cluster1/details.yaml", &service("70000"));
    let a = analyze(Some(&env.mesh), &[]).unwrap();
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Error,
            resource: Some(("Service", "bookinfo", "details")),
            field: Some("spec.ports[0].port"),
            words: &["70000"],
            file: "details.yaml",
        },
    );
    env.write("cluster1/details.yaml", &service("9080"));
    assert_clean(&analyze(Some(&env.mesh), &[]).unwrap());
}

#[test]
fn invalid_gateway_port() {
    let env = Env::new();
    for (port, words) in [
        ("0", &["port number is required"][..]),
        ("70000", &["port 70000", "between 1 and 65535"][..]),
    ] {
        let a = env.analyze(&[("gw.yaml", &gateway("{istio: ingressgateway}", port))]);
        expect(
            &a,
            &Want {
                code: "IST0106",
                level: Level::Error,
                resource: Some(("Gateway", "istio-system", "ingress")),
                field: Some("spec.servers[0].port.number"),
                words,
                file: "gw.yaml",
            },
        );
    }
    assert_clean(&env.analyze(&[("gw.yaml", &gateway("{istio: ingressgateway}", "80"))]));
}

fn split(w1: &str, w2: &str) -> String {
    vs_reviews(&format!(
        "- destination: {{host: reviews, subset: v1}}\n  weight: {w1}\n- destination: {{host: reviews, subset: v2}}\n  weight: {w2}\n"
    ))
}

#[test]
fn negative_route_weight() {
    let env = Env::new();
    let a = env.analyze(&[
        ("dr.yaml", &dr_reviews()),
        ("vs.yaml", &split("-10", "110")),
    ]);
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].route[0].weight"),
            words: &["weight -10 is negative"],
            file: "vs.yaml",
        },
    );
    assert!(a.has_errors());
    let a = env.analyze(&[("dr.yaml", &dr_reviews()), ("vs.yaml", &split("10", "90"))]);
    assert_clean(&a);
}

#[test]
fn all_route_weights_zero() {
    let env = Env::new();
    let a = env.analyze(&[("dr.yaml", &dr_reviews()), ("vs.yaml", &split("0", "0"))]);
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].route"),
            words: &["total weight", "2 destinations is 0"],
            file: "vs.yaml",
        },
    );
    assert!(a.has_errors());
    // One destination at weight 0 next to a positive one is fine.
    let a = env.analyze(&[("dr.yaml", &dr_reviews()), ("vs.yaml", &split("0", "100"))]);
    assert_clean(&a);
}

#[test]
fn route_weights_summing_to_90_are_only_a_warning() {
    let env = Env::new();
    let a = env.analyze(&[("dr.yaml", &dr_reviews()), ("vs.yaml", &split("60", "30"))]);
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Warning,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].route"),
            words: &["sum to 90", "not 100"],
            file: "vs.yaml",
        },
    );
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
    assert!(!a.has_errors());
    let a = env.analyze(&[("dr.yaml", &dr_reviews()), ("vs.yaml", &split("60", "40"))]);
    assert_clean(&a);
}

#[test]
fn invalid_regex_in_a_uri_match() {
    let env = Env::new();
    let vs = |re: &str| {
        obj(
            "VirtualService",
            "bookinfo",
            "reviews",
            &format!(
                "hosts: [reviews]\nhttp:\n- match:\n  - uri:\n      regex: '{re}'\n  route:\n  - destination: {{host: reviews}}\n"
            ),
        )
    };
    let a = env.analyze(&[("vs.yaml", &vs("^/api/(v1|v2"))]);
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].match[0].uri.regex"),
            words: &["\"^/api/(v1|v2\"", "not valid"],
            file: "vs.yaml",
        },
    );
    assert_clean(&env.analyze(&[("vs.yaml", &vs("^/api/(v1|v2)$"))]));
}

#[test]
fn duplicate_subset_names() {
    let env = Env::new();
    let dr = |second: &str| {
        obj(
            "DestinationRule",
            "bookinfo",
            "reviews",
            &format!(
                "host: reviews\nsubsets:\n- name: v1\n  labels: {{version: v1}}\n- name: {second}\n  labels: {{version: v2}}\n"
            ),
        )
    };
    let a = env.analyze(&[("dr.yaml", &dr("v1"))]);
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Error,
            resource: Some(("DestinationRule", "bookinfo", "reviews")),
            field: Some("spec.subsets[1].name"),
            words: &["duplicate subset name \"v1\""],
            file: "dr.yaml",
        },
    );
    assert_clean(&env.analyze(&[("dr.yaml", &dr("v2"))]));
}

// ---------------------------------------------------------------------------
// References

#[test]
fn subset_not_defined_by_any_destination_rule() {
    let env = Env::new();
    let a = env.analyze(&[
        ("dr.yaml", &dr_reviews()),
        (
            "vs.yaml",
            &vs_reviews("- destination: {host: reviews, subset: v4}\n"),
        ),
    ]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].route[0].destination.subset"),
            words: &["\"reviews+v4\"", "reviews.bookinfo.svc.cluster.local"],
            file: "vs.yaml",
        },
    );
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
    // Without any DestinationRule, no subset is defined.
    let a = env.analyze(&[(
        "vs.yaml",
        &vs_reviews("- destination: {host: reviews, subset: v1}\n"),
    )]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].route[0].destination.subset"),
            words: &["\"reviews+v1\""],
            file: "vs.yaml",
        },
    );
    let a = env.analyze(&[
        ("dr.yaml", &dr_reviews()),
        (
            "vs.yaml",
            &vs_reviews("- destination: {host: reviews, subset: v2}\n"),
        ),
    ]);
    assert_clean(&a);
}

#[test]
fn short_host_resolves_in_the_virtual_services_namespace() {
    let env = Env::new();
    let vs = |ns: &str| {
        obj(
            "VirtualService",
            ns,
            "reviews",
            "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
        )
    };
    // `reviews` in namespace `other` is reviews.other.svc.cluster.local: no such Service.
    let a = env.analyze(&[("vs.yaml", &vs("other"))]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "other", "reviews")),
            field: Some("spec.http[0].route[0].destination.host"),
            words: &[
                "Referenced host not found",
                "\"reviews\"",
                "reviews.other.svc.cluster.local",
            ],
            file: "vs.yaml",
        },
    );
    assert_clean(&env.analyze(&[("vs.yaml", &vs("bookinfo"))]));
}

#[test]
fn fqdn_host() {
    let env = Env::new();
    let vs = |host: &str| {
        obj(
            "VirtualService",
            "other",
            "reviews",
            &format!("hosts: [{host}]\nhttp:\n- route:\n  - destination: {{host: {host}}}\n"),
        )
    };
    let a = env.analyze(&[("vs.yaml", &vs("reviews.other.svc.cluster.local"))]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "other", "reviews")),
            field: Some("spec.http[0].route[0].destination.host"),
            words: &["\"reviews.other.svc.cluster.local\""],
            file: "vs.yaml",
        },
    );
    // From any namespace, the FQDN of a Service that exists is found.
    assert_clean(&env.analyze(&[("vs.yaml", &vs("reviews.bookinfo.svc.cluster.local"))]));
}

#[test]
fn service_entry_host() {
    let env = Env::new();
    let vs = obj(
        "VirtualService",
        "bookinfo",
        "external-api",
        "hosts: [api.example.com]\nhttp:\n- timeout: 5s\n  route:\n  - destination: {host: api.example.com}\n",
    );
    let a = env.analyze(&[("vs.yaml", &vs)]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "external-api")),
            field: Some("spec.http[0].route[0].destination.host"),
            words: &["\"api.example.com\""],
            file: "vs.yaml",
        },
    );
    let se = obj(
        "ServiceEntry",
        "bookinfo",
        "external-api",
        "hosts: [api.example.com]\nlocation: MESH_EXTERNAL\nresolution: DNS\nports:\n- {number: 80, name: http, protocol: HTTP}\n",
    );
    assert_clean(&env.analyze(&[("vs.yaml", &vs), ("se.yaml", &se)]));
}

#[test]
fn host_not_found_in_tcp_and_mirror_destinations() {
    let env = Env::new();
    let vs = obj(
        "VirtualService",
        "bookinfo",
        "reviews",
        "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}\n  mirror: {host: reviews-shadow}\ntcp:\n- route:\n  - destination: {host: nosuch}\n",
    );
    let a = env.analyze(&[("vs.yaml", &vs)]);
    for field in [
        "spec.http[0].mirror.host",
        "spec.tcp[0].route[0].destination.host",
    ] {
        expect(
            &a,
            &Want {
                code: "IST0101",
                level: Level::Error,
                resource: Some(("VirtualService", "bookinfo", "reviews")),
                field: Some(field),
                words: &["Referenced host not found"],
                file: "vs.yaml",
            },
        );
    }
    let fixed = vs
        .replace("reviews-shadow", "ratings")
        .replace("nosuch", "ratings");
    assert_clean(&env.analyze(&[("vs.yaml", &fixed)]));
}

#[test]
fn gateway_not_found() {
    let env = Env::new();
    let vs = |gw: &str| {
        obj(
            "VirtualService",
            "bookinfo",
            "reviews",
            &format!(
                "hosts: [reviews]\ngateways: [{gw}]\nhttp:\n- route:\n  - destination: {{host: reviews}}\n"
            ),
        )
    };
    let gw = gateway("{istio: ingressgateway}", "80");
    // A bare name is a Gateway in the VirtualService's own namespace.
    let a = env.analyze(&[("vs.yaml", &vs("ingress")), ("gw.yaml", &gw)]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.gateways[0]"),
            words: &[
                "Referenced gateway not found",
                "\"ingress\"",
                "bookinfo/ingress",
            ],
            file: "vs.yaml",
        },
    );
    let a = env.analyze(&[("vs.yaml", &vs("istio-system/ingress"))]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.gateways[0]"),
            words: &["\"istio-system/ingress\""],
            file: "vs.yaml",
        },
    );
    // The `namespace/name` form finds it; `mesh` needs no Gateway.
    assert_clean(&env.analyze(&[("vs.yaml", &vs("istio-system/ingress")), ("gw.yaml", &gw)]));
    assert_clean(&env.analyze(&[
        ("vs.yaml", &vs("istio-system/ingress, mesh")),
        ("gw.yaml", &gw),
    ]));
}

#[test]
fn gateway_in_a_match_not_found() {
    let env = Env::new();
    let vs = |gw: &str| {
        obj(
            "VirtualService",
            "bookinfo",
            "reviews",
            &format!(
                "hosts: [reviews]\ngateways: [mesh, istio-system/ingress]\nhttp:\n- match:\n  - gateways: [{gw}]\n  route:\n  - destination: {{host: reviews}}\n"
            ),
        )
    };
    let gw = gateway("{istio: ingressgateway}", "80");
    let a = env.analyze(&[("vs.yaml", &vs("istio-system/egress")), ("gw.yaml", &gw)]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].match[0].gateways[0]"),
            words: &["\"istio-system/egress\""],
            file: "vs.yaml",
        },
    );
    assert_clean(&env.analyze(&[("vs.yaml", &vs("istio-system/ingress")), ("gw.yaml", &gw)]));
}

#[test]
fn gateway_selector_matching_no_workload() {
    let env = Env::new();
    let a = env.analyze(&[("gw.yaml", &gateway("{istio: ingress-gateway}", "80"))]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("Gateway", "istio-system", "ingress")),
            field: Some("spec.selector"),
            words: &["Referenced selector not found", "istio=ingress-gateway"],
            file: "gw.yaml",
        },
    );
    // Every label must match: one right label is not enough.
    let a = env.analyze(&[(
        "gw.yaml",
        &gateway("{istio: ingressgateway, app: other}", "80"),
    )]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("Gateway", "istio-system", "ingress")),
            field: Some("spec.selector"),
            words: &["app=other", "istio=ingressgateway"],
            file: "gw.yaml",
        },
    );
    // A Pod's labels.
    assert_clean(&env.analyze(&[("gw.yaml", &gateway("{istio: ingressgateway}", "80"))]));
    // A Deployment's pod template (there is no Pod with these labels).
    assert_clean(&env.analyze(&[("gw.yaml", &gateway("{istio: egressgateway}", "80"))]));
}

// ---------------------------------------------------------------------------
// Conflicts

fn dr(name: &str, spec_tail: &str) -> String {
    obj(
        "DestinationRule",
        "bookinfo",
        name,
        &format!("host: reviews\n{spec_tail}"),
    )
}

const POLICY: &str = "trafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN}\n";
const SUBSET_V1: &str = "subsets:\n- name: v1\n  labels: {version: v1}\n";
const SUBSET_V2: &str = "subsets:\n- name: v2\n  labels: {version: v2}\n";

#[test]
fn conflicting_destination_rules_both_with_a_traffic_policy() {
    let env = Env::new();
    let a = env.analyze(&[
        (
            "dr-a.yaml",
            &dr("reviews-a", &format!("{POLICY}{SUBSET_V1}")),
        ),
        (
            "dr-b.yaml",
            &dr("reviews-b", &format!("{POLICY}{SUBSET_V2}")),
        ),
    ]);
    expect(
        &a,
        &Want {
            code: "ISM0006",
            level: Level::Error,
            resource: Some(("DestinationRule", "bookinfo", "reviews-b")),
            field: Some("spec.host"),
            words: &[
                "bookinfo/reviews-a and bookinfo/reviews-b",
                "reviews.bookinfo.svc.cluster.local",
                "both set a top-level trafficPolicy",
            ],
            file: "dr-b.yaml",
        },
    );
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
    // Merged into one DestinationRule.
    let merged = dr(
        "reviews",
        &format!(
            "{POLICY}subsets:\n- name: v1\n  labels: {{version: v1}}\n- name: v2\n  labels: {{version: v2}}\n"
        ),
    );
    assert_clean(&env.analyze(&[("dr-a.yaml", &merged)]));
}

#[test]
fn conflicting_destination_rules_sharing_a_subset() {
    let env = Env::new();
    let a = env.analyze(&[
        ("dr-a.yaml", &dr("reviews-a", SUBSET_V1)),
        (
            "dr-b.yaml",
            &dr("reviews-b", &format!("{POLICY}{SUBSET_V1}")),
        ),
    ]);
    expect(
        &a,
        &Want {
            code: "ISM0006",
            level: Level::Error,
            resource: Some(("DestinationRule", "bookinfo", "reviews-b")),
            field: Some("spec.host"),
            words: &["both define subset v1"],
            file: "dr-b.yaml",
        },
    );
    // Different subsets, one traffic policy: merged, with a warning.
    let a = env.analyze(&[
        ("dr-a.yaml", &dr("reviews-a", SUBSET_V1)),
        (
            "dr-b.yaml",
            &dr("reviews-b", &format!("{POLICY}{SUBSET_V2}")),
        ),
    ]);
    expect(
        &a,
        &Want {
            code: "ISM0006",
            level: Level::Warning,
            resource: Some(("DestinationRule", "bookinfo", "reviews-b")),
            field: Some("spec.host"),
            words: &["bookinfo/reviews-a and bookinfo/reviews-b", "merged"],
            file: "dr-b.yaml",
        },
    );
    assert!(!a.has_errors(), "{}", show(&a));
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
}

#[test]
fn destination_rules_for_one_host_in_different_namespaces_do_not_conflict() {
    let env = Env::new();
    let fq = |ns: &str| {
        obj(
            "DestinationRule",
            ns,
            "reviews",
            &format!("host: reviews.bookinfo.svc.cluster.local\n{POLICY}{SUBSET_V1}"),
        )
    };
    let a = env.analyze(&[("dr-a.yaml", &fq("bookinfo")), ("dr-b.yaml", &fq("other"))]);
    assert_clean(&a);
    // The same two in one namespace conflict (under different names).
    let b = fq("bookinfo").replace("name: reviews", "name: reviews-b");
    let a = env.analyze(&[("dr-a.yaml", &fq("bookinfo")), ("dr-b.yaml", &b)]);
    expect(
        &a,
        &Want {
            code: "ISM0006",
            level: Level::Error,
            resource: Some(("DestinationRule", "bookinfo", "reviews-b")),
            field: Some("spec.host"),
            words: &["both set a top-level trafficPolicy"],
            file: "dr-b.yaml",
        },
    );
}

#[test]
fn destination_rule_host_not_found_is_a_warning() {
    let env = Env::new();
    let dr = |host: &str| {
        obj(
            "DestinationRule",
            "bookinfo",
            "r",
            &format!("host: {host}\n{SUBSET_V1}"),
        )
    };
    let a = env.analyze(&[("dr.yaml", &dr("reviewz"))]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Warning,
            resource: Some(("DestinationRule", "bookinfo", "r")),
            field: Some("spec.host"),
            words: &[
                "\"reviewz\"",
                "reviewz.bookinfo.svc.cluster.local",
                "no effect",
            ],
            file: "dr.yaml",
        },
    );
    assert!(!a.has_errors());
    assert_clean(&env.analyze(&[("dr.yaml", &dr("reviews"))]));
}

#[test]
fn mesh_virtual_services_with_the_same_host() {
    let env = Env::new();
    let vs = |name: &str, host: &str, gateways: &str| {
        obj(
            "VirtualService",
            "bookinfo",
            name,
            &format!(
                "hosts: [{host}]\n{gateways}http:\n- route:\n  - destination: {{host: reviews}}\n"
            ),
        )
    };
    let gw = gateway("{istio: ingressgateway}", "80");
    // A short name and the FQDN are the same host.
    let a = env.analyze(&[
        ("vs-a.yaml", &vs("reviews-a", "reviews", "")),
        (
            "vs-b.yaml",
            &vs(
                "reviews-b",
                "reviews.bookinfo.svc.cluster.local",
                "gateways: [mesh]\n",
            ),
        ),
    ]);
    for (name, file) in [("reviews-a", "vs-a.yaml"), ("reviews-b", "vs-b.yaml")] {
        expect(
            &a,
            &Want {
                code: "IST0109",
                level: Level::Error,
                resource: Some(("VirtualService", "bookinfo", name)),
                field: Some("spec.hosts"),
                words: &[
                    "bookinfo/reviews-a,bookinfo/reviews-b",
                    "\"reviews.bookinfo.svc.cluster.local\"",
                    "mesh gateway",
                ],
                file,
            },
        );
    }
    assert_eq!(a.findings.len(), 2, "{}", show(&a));
    // One of them bound to an ingress gateway only: no conflict.
    let a = env.analyze(&[
        ("vs-a.yaml", &vs("reviews-a", "reviews", "")),
        (
            "vs-b.yaml",
            &vs("reviews-b", "reviews", "gateways: [istio-system/ingress]\n"),
        ),
        ("gw.yaml", &gw),
    ]);
    assert_clean(&a);
}

// ---------------------------------------------------------------------------
// Without a mesh; directories; overlays

#[test]
fn paths_only_without_a_mesh() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  ports:\n  - {name: http, port: 9080}\n";
    let dr = obj(
        "DestinationRule",
        "default",
        "reviews",
        "host: reviews\nsubsets:\n- name: v1\n  labels: {version: v1}\n",
    );
    let vs = obj(
        "VirtualService",
        "default",
        "reviews",
        "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews, subset: v1}\n",
    );
    let (_dir, a) = analyze_alone(&[("all.yaml", &docs(&[svc, &dr, &vs]))]);
    assert_clean(&a);
    assert_eq!(a.objects, 3);

    // Without the Service, both rules point nowhere.
    let (_dir, a) = analyze_alone(&[("config.yaml", &docs(&[&dr, &vs]))]);
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "default", "reviews")),
            field: Some("spec.http[0].route[0].destination.host"),
            words: &["reviews.default.svc.cluster.local"],
            file: "config.yaml",
        },
    );
    let d = expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Warning,
            resource: Some(("DestinationRule", "default", "reviews")),
            field: Some("spec.host"),
            words: &["reviews.default.svc.cluster.local"],
            file: "config.yaml",
        },
    );
    assert_eq!((d.document, d.line), (Some(0), Some(1)));
    let vs_finding = a.findings.iter().find(|d| d.level == Level::Error).unwrap();
    let dr_lines = dr.lines().count();
    assert_eq!(
        (vs_finding.document, vs_finding.line),
        (Some(1), Some(dr_lines + 2))
    );
    assert_eq!(a.objects, 2);
}

#[test]
fn a_directory_in_paths() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("nested")).unwrap();
    std::fs::write(config.join("dr.yaml"), dr_reviews()).unwrap();
    std::fs::write(
        config.join("nested/vs.yml"),
        vs_reviews("- destination: {host: reviews, subset: v1}\n  weight: -1\n"),
    )
    .unwrap();
    std::fs::write(config.join("notes.txt"), "not: [yaml").unwrap();
    let env = Env::new();
    let a = analyze(Some(&env.mesh), std::slice::from_ref(&config)).unwrap();
    expect(
        &a,
        &Want {
            code: "IST0106",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].route[0].weight"),
            words: &["negative"],
            file: "vs.yml",
        },
    );
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
    // The DestinationRule was read; the .txt file was not.
    assert_eq!(a.objects, 6);
}

#[test]
fn a_path_takes_the_place_of_the_same_object_in_the_config_cluster() {
    let env = Env::new();
    // The config cluster has a VirtualService routing to a subset nobody defines.
    env.write(
        "cluster1/istio-config.yaml",
        &vs_reviews("- destination: {host: reviews, subset: v3}\n"),
    );
    let a = analyze(Some(&env.mesh), &[]).unwrap();
    expect(
        &a,
        &Want {
            code: "IST0101",
            level: Level::Error,
            resource: Some(("VirtualService", "bookinfo", "reviews")),
            field: Some("spec.http[0].route[0].destination.subset"),
            words: &["\"reviews+v3\""],
            file: "istio-config.yaml",
        },
    );
    // The fixed version, given as a path, replaces it.
    let a = env.analyze(&[(
        "fixed.yaml",
        &vs_reviews("- destination: {host: reviews}\n"),
    )]);
    assert_clean(&a);
    assert_eq!(a.objects, 6);
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let env = Env::new();
    let missing = env.dir.path().join("nope.yaml");
    let err = analyze(Some(&env.mesh), &[missing]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("nope.yaml"), "{msg}");
}

// ---------------------------------------------------------------------------
// Rendering and status

#[test]
fn rendering_with_findings() {
    let env = Env::new();
    let a = env.analyze(&[
        ("dr.yaml", &dr_reviews()),
        ("vs.yaml", &split("60", "30")),
        ("gw.yaml", &gateway("{istio: nosuch}", "80")),
    ]);
    assert!(a.has_errors());
    let out = render(&a);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("Error [IST0101] (Gateway istio-system/ingress) spec.selector: Referenced selector not found"),
        "{out}"
    );
    assert!(lines[0].contains("gw.yaml:1, document 1]"), "{out}");
    assert!(
        lines[1].starts_with("Warning [IST0106] (VirtualService bookinfo/reviews) spec.http[0].route: weights sum to 90"),
        "{out}"
    );
    assert!(lines[1].ends_with("vs.yaml:1, document 1]"), "{out}");
    assert_eq!(lines[2], "1 errors, 1 warnings, 0 info in 8 objects");

    // Warnings alone are not errors.
    let a = env.analyze(&[("dr.yaml", &dr_reviews()), ("vs.yaml", &split("60", "30"))]);
    assert!(!a.has_errors());
    assert!(render(&a).ends_with("0 errors, 1 warnings, 0 info in 7 objects\n"));
}

#[test]
fn rendering_a_clean_analysis() {
    let env = Env::new();
    let a = env.analyze(&[("dr.yaml", &dr_reviews())]);
    assert_eq!(
        render(&a),
        "✔ No validation issues found when analyzing 6 objects.\n"
    );
}

#[test]
fn errors_are_listed_before_warnings() {
    let env = Env::new();
    let a = env.analyze(&[
        ("a.yaml", &split("60", "30")),
        (
            "b.yaml",
            &obj("DestinationRule", "bookinfo", "x", "host: nosuch\n"),
        ),
        ("c.yaml", &gateway("{istio: nosuch}", "80")),
    ]);
    let levels: Vec<Level> = a.findings.iter().map(|d| d.level).collect();
    let mut sorted = levels.clone();
    sorted.sort();
    assert_eq!(levels, sorted, "{}", show(&a));
    assert!(levels.contains(&Level::Error) && levels.contains(&Level::Warning));
}

// ---------------------------------------------------------------------------
// Fields accepted but not enforced yet (ISM0007)

/// The ISM0007 finding about `field` of `resource` in `file`; its message must be
/// exactly `message`.
#[track_caller]
fn expect_not_enforced<'a>(
    a: &'a Analysis,
    resource: (&str, &str, &str),
    field: &str,
    file: &str,
    message: &str,
) -> &'a Diagnostic {
    let d = expect(
        a,
        &Want {
            code: "ISM0007",
            level: Level::Warning,
            resource: Some(resource),
            field: Some(field),
            words: &[],
            file,
        },
    );
    assert_eq!(d.name, "NotEnforcedYet");
    assert_eq!(d.message, message);
    d
}

/// Every ISM0007 finding as `Kind namespace/name field`.
fn not_enforced(a: &Analysis) -> Vec<String> {
    a.findings
        .iter()
        .filter(|d| d.code == "ISM0007")
        .map(|d| {
            let r = d.resource.as_ref().map(ToString::to_string);
            format!(
                "{} {}",
                r.unwrap_or_default(),
                d.field.as_deref().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn not_enforced_fields_warn_and_istio_mutual_is_enforced() {
    let env = Env::new();
    let dr = obj(
        "DestinationRule",
        "bookinfo",
        "reviews",
        "host: reviews\ntrafficPolicy:\n  tunnel: {targetHost: proxy.example.com, targetPort: 3128}\nsubsets:\n- name: v1\n  labels: {version: v1}\n",
    );
    let a = env.analyze(&[("dr.yaml", &dr)]);
    let d = expect_not_enforced(
        &a,
        ("DestinationRule", "bookinfo", "reviews"),
        "spec.trafficPolicy.tunnel",
        "dr.yaml",
        "accepted, not enforced yet: DestinationRule trafficPolicy.tunnel: Istio tunnels TCP connections to the host through the HTTP proxy at targetHost:targetPort (CONNECT or POST); Isthmus connects to the host directly",
    );
    assert_eq!(d.line, Some(1));
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
    // A warning: the config is valid, and analyze exits 0 for it.
    assert!(!a.has_errors());
    assert!(render(&a).starts_with("Warning [ISM0007] (DestinationRule bookinfo/reviews) spec.trafficPolicy.tunnel: accepted, not enforced yet: DestinationRule trafficPolicy.tunnel: "));
    // Mesh mTLS is enforced: ISTIO_MUTUAL (and SIMPLE) are clean.
    let tls = |mode: &str| {
        obj(
            "DestinationRule",
            "bookinfo",
            "reviews",
            &format!("host: reviews\ntrafficPolicy:\n  tls:\n    mode: {mode}\n"),
        )
    };
    assert_clean(&env.analyze(&[("dr.yaml", &tls("ISTIO_MUTUAL"))]));
    assert_clean(&env.analyze(&[("dr.yaml", &tls("SIMPLE"))]));
}

#[test]
fn traffic_policy_fields_not_enforced_in_subsets_and_ports() {
    let env = Env::new();
    let dr = obj(
        "DestinationRule",
        "bookinfo",
        "ratings",
        "host: ratings\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 9080}\n    connectionPool:\n      http:\n        http2KeepAlive: {interval: 10s, timeout: 2s}\nsubsets:\n- name: v1\n  labels: {version: v1}\n  trafficPolicy:\n    tunnel: {targetHost: proxy.example.com, targetPort: 3128}\n    retryBudget: {percent: 20}\n",
    );
    // The rule is the second document: its findings give its line.
    let a = env.analyze(&[("policies.yaml", &docs(&[&dr_reviews(), &dr]))]);
    let ratings = ("DestinationRule", "bookinfo", "ratings");
    let d = expect_not_enforced(
        &a,
        ratings,
        "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.http2KeepAlive",
        "policies.yaml",
        "accepted, not enforced yet: DestinationRule connectionPool.http.http2KeepAlive: Istio sends HTTP/2 PING frames on upstream connections and closes those that do not answer; Isthmus sends no pings",
    );
    assert_eq!((d.line, d.document), (Some(14), Some(1)));
    expect_not_enforced(
        &a,
        ratings,
        "spec.subsets[0].trafficPolicy.tunnel",
        "policies.yaml",
        "accepted, not enforced yet: DestinationRule trafficPolicy.tunnel: Istio tunnels TCP connections to the host through the HTTP proxy at targetHost:targetPort (CONNECT or POST); Isthmus connects to the host directly",
    );
    expect_not_enforced(
        &a,
        ratings,
        "spec.subsets[0].trafficPolicy.retryBudget",
        "policies.yaml",
        "accepted, not enforced yet: DestinationRule trafficPolicy.retryBudget: Istio limits concurrent retries to a share of the active requests; Isthmus sets no retry budget (retries are limited only by connectionPool.http.maxRetries)",
    );
    assert_eq!(a.findings.len(), 3, "{}", show(&a));
}

#[test]
fn gateway_auto_passthrough_and_no_selector_are_not_enforced_yet() {
    let env = Env::new();
    let ew = obj(
        "Gateway",
        "istio-system",
        "east-west",
        "selector: {istio: ingressgateway}\nservers:\n- port: {number: 15443, name: tls, protocol: TLS}\n  tls: {mode: AUTO_PASSTHROUGH}\n  hosts: [\"*.local\"]\n",
    );
    let any = obj(
        "Gateway",
        "istio-system",
        "any",
        "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]\n",
    );
    let a = env.analyze(&[("ew.yaml", &ew), ("any.yaml", &any)]);
    expect_not_enforced(
        &a,
        ("Gateway", "istio-system", "east-west"),
        "spec.servers[0].tls.mode",
        "ew.yaml",
        "accepted, not enforced yet: Gateway servers.tls.mode AUTO_PASSTHROUGH: Istio routes each connection by its SNI (outbound_.PORT_.SUBSET_.HOST) straight to that service, without VirtualServices; Isthmus routes only SNI names that bound VirtualServices' tls rules list, as with PASSTHROUGH",
    );
    expect_not_enforced(
        &a,
        ("Gateway", "istio-system", "any"),
        "spec.selector",
        "any.yaml",
        "accepted, not enforced yet: Gateway selector (none): Istio applies a Gateway without a selector to every gateway proxy; Isthmus applies it to none (add a selector with the gateway pods' labels, e.g. istio: ingressgateway)",
    );
    assert_eq!(a.findings.len(), 2, "{}", show(&a));
    // PASSTHROUGH is enforced.
    assert_clean(&env.analyze(&[("ew.yaml", &ew.replace("AUTO_PASSTHROUGH", "PASSTHROUGH"))]));
}

#[test]
fn tcp_match_destination_subnets_not_enforced_yet() {
    let env = Env::new();
    let vs = obj(
        "VirtualService",
        "bookinfo",
        "ratings",
        "hosts: [ratings]\ntls:\n- match:\n  - sniHosts: [ratings]\n    sourceLabels: {app: reviews}\n  route:\n  - destination: {host: ratings}\ntcp:\n- match:\n  - port: 5432\n    destinationSubnets: [198.18.0.0/24]\n  route:\n  - destination: {host: ratings}\n",
    );
    let a = env.analyze(&[("vs.yaml", &vs)]);
    let ratings = ("VirtualService", "bookinfo", "ratings");
    // tls match sourceLabels are enforced (istio::refs::Source::matches_l4).
    expect_not_enforced(
        &a,
        ratings,
        "spec.tcp[0].match[0].destinationSubnets",
        "vs.yaml",
        "accepted, not enforced yet: VirtualService tcp.match.destinationSubnets: Istio applies the rule only to connections to these address ranges; Isthmus ignores the condition: the rule applies to every connection the rest of the match selects",
    );
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
}

#[test]
fn service_entry_and_workload_entry_fields_not_enforced_yet() {
    let env = Env::new();
    let se = obj(
        "ServiceEntry",
        "bookinfo",
        "pg",
        "hosts: [pg.example.com]\nports:\n- {number: 5432, name: tcp-pg, protocol: TCP}\nresolution: DNS\nlocation: MESH_INTERNAL\n",
    );
    let we = obj(
        "WorkloadEntry",
        "bookinfo",
        "vm-1",
        "address: 203.0.113.21\nnetwork: vm-network\nlabels: {app: pg}\n",
    );
    let a = env.analyze(&[("se.yaml", &se), ("we.yaml", &we)]);
    expect_not_enforced(
        &a,
        ("ServiceEntry", "bookinfo", "pg"),
        "spec.ports[0]",
        "se.yaml",
        "accepted, not enforced yet: ServiceEntry ports (TCP, without addresses): Istio sends every outbound TCP connection on port 5432 through this ServiceEntry (listener 0.0.0.0_5432); Isthmus builds no listener for a TCP port without an address: connections are handled as traffic to an unknown destination (passed through, or dropped under outboundTrafficPolicy REGISTRY_ONLY)",
    );
    expect_not_enforced(
        &a,
        ("ServiceEntry", "bookinfo", "pg"),
        "spec.location",
        "se.yaml",
        "accepted, not enforced yet: ServiceEntry location MESH_INTERNAL: Istio treats the endpoints as mesh workloads (mutual TLS to those with sidecars); Isthmus has no mesh mTLS yet and sends plaintext, as for MESH_EXTERNAL",
    );
    expect_not_enforced(
        &a,
        ("WorkloadEntry", "bookinfo", "vm-1"),
        "spec.network",
        "we.yaml",
        "accepted, not enforced yet: WorkloadEntry network: Istio reaches the workload from proxies on other networks through its network's east-west gateway; Isthmus sends every proxy the workload's own address (no routing across networks yet)",
    );
    assert_eq!(a.findings.len(), 3, "{}", show(&a));
}

#[test]
fn sidecar_is_not_enforced_as_a_whole_kind_peer_authentication_is() {
    let env = Env::new();
    let sidecar = obj(
        "Sidecar",
        "bookinfo",
        "default",
        "egress:\n- hosts: [\"./*\", \"istio-system/*\"]\n",
    );
    let pa = obj(
        "PeerAuthentication",
        "bookinfo",
        "default",
        "mtls: {mode: STRICT}\n",
    )
    .replace("networking.istio.io/v1", "security.istio.io/v1");
    let a = env.analyze(&[("sidecar.yaml", &sidecar), ("pa.yaml", &pa)]);
    expect_not_enforced(
        &a,
        ("Sidecar", "bookinfo", "default"),
        "spec",
        "sidecar.yaml",
        "accepted, not enforced yet: Sidecar (whole kind): Istio applies the Sidecar's egress to the proxies of every workload in its namespace; Isthmus does not read Sidecars: every proxy sees every service exported to it, listens on the ports its services declare and follows the mesh's outboundTrafficPolicy",
    );
    // PeerAuthentication is enforced (mesh mTLS): no finding for it.
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
}

#[test]
fn config_using_only_enforced_fields_is_clean() {
    let env = Env::new();
    let dr = obj(
        "DestinationRule",
        "bookinfo",
        "reviews",
        "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpHeaderName: x-user}\n    localityLbSetting: {enabled: false}\n  connectionPool:\n    tcp: {maxConnections: 100, connectTimeout: 2s}\n    http: {http2MaxRequests: 1000, maxRetries: 3}\n  outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}\n  tls: {mode: SIMPLE, sni: reviews.example.com, subjectAltNames: [reviews.example.com]}\nsubsets:\n- name: v1\n  labels: {version: v1}\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s}}\n",
    );
    let vs = obj(
        "VirtualService",
        "bookinfo",
        "reviews",
        "hosts: [reviews]\nhttp:\n- match:\n  - headers: {end-user: {exact: jason}}\n    sourceLabels: {app: productpage}\n  fault: {delay: {fixedDelay: 1s, percentage: {value: 10}}}\n  mirror: {host: ratings}\n  mirrorPercentage: {value: 5}\n  corsPolicy: {allowOrigins: [{exact: \"https://example.com\"}], allowMethods: [GET]}\n  retries: {attempts: 3, perTryTimeout: 2s}\n  route:\n  - destination: {host: reviews, subset: v1}\n",
    );
    let gw = obj(
        "Gateway",
        "istio-system",
        "ingress",
        "selector: {istio: ingressgateway}\nservers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"bookinfo/*\"]\n  tls: {mode: MUTUAL, credentialName: bookinfo-cert}\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]\n  tls: {httpsRedirect: true}\n",
    );
    let se = obj(
        "ServiceEntry",
        "bookinfo",
        "pg",
        "hosts: [pg.example.com]\naddresses: [203.0.113.30]\nports:\n- {number: 5432, name: tcp-pg, protocol: TCP}\n- {number: 443, name: https, protocol: HTTPS}\nresolution: STATIC\nendpoints:\n- {address: 203.0.113.31, weight: 2, locality: region1/zone1}\n",
    );
    let a = env.analyze(&[
        ("dr.yaml", &dr),
        ("vs.yaml", &vs),
        ("gw.yaml", &gw),
        ("se.yaml", &se),
    ]);
    assert_clean(&a);
    assert_eq!(a.objects, 9);
}

#[test]
fn istio_config_of_other_clusters_is_not_reported() {
    // Istio config is read from config clusters only: the Sidecar in cluster2 is not
    // applied at all, for that reason.
    let dir = tempfile::tempdir().unwrap();
    let sidecar = obj(
        "Sidecar",
        "bookinfo",
        "default",
        "egress:\n- hosts: [\"./*\"]\n",
    );
    for c in ["cluster1", "cluster2"] {
        std::fs::create_dir(dir.path().join(c)).unwrap();
        std::fs::write(dir.path().join(c).join("sidecar.yaml"), &sidecar).unwrap();
    }
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "clusters:\n- name: cluster1\n  source: {manifests: cluster1}\n- name: cluster2\n  source: {manifests: cluster2}\n",
    )
    .unwrap();
    let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
    let a = analyze(Some(&mesh), &[]).unwrap();
    assert_eq!(
        not_enforced(&a),
        ["Sidecar bookinfo/default spec"],
        "{}",
        show(&a)
    );
    let file = a.findings[0].file.as_deref().unwrap();
    assert_eq!(
        file.parent().and_then(Path::file_name),
        Some("cluster1".as_ref())
    );
}

// ---------------------------------------------------------------------------
// The bundled example and Istio's own samples

fn examples_mesh() -> MeshConfig {
    MeshConfig::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/mesh.yaml"
    )))
    .unwrap()
}

fn istio_sample(rel: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/istio/samples"
    ))
    .join(rel)
}

#[test]
fn the_bundled_example_is_clean() {
    let a = analyze(Some(&examples_mesh()), &[]).unwrap();
    // Clean but for the one field it sets that Isthmus does not enforce yet: the
    // east-west gateway's AUTO_PASSTHROUGH (routing across networks is not built yet).
    let bad: Vec<String> = a
        .findings
        .iter()
        .filter(|d| d.level <= Level::Warning)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    expect(
        &a,
        &Want {
            code: "ISM0007",
            level: Level::Warning,
            resource: Some(("Gateway", "istio-system", "cross-network-gateway")),
            field: Some("spec.servers[0].tls.mode"),
            words: &["accepted, not enforced yet: Gateway servers.tls.mode AUTO_PASSTHROUGH"],
            file: "istio-config.yaml",
        },
    );
    assert_eq!(a.findings.len(), 1, "{}", show(&a));
    assert!(a.objects > 30, "{}", a.objects);
    assert!(
        render(&a).ends_with(&format!(
            "0 errors, 1 warnings, 0 info in {} objects\n",
            a.objects
        )),
        "{}",
        render(&a)
    );
}

#[test]
fn istio_sample_against_the_example_mesh_finds_no_reviews_in_default() {
    // The sample names no namespace, so it lands in `default`; the example runs
    // bookinfo in `bookinfo`.
    let sample = istio_sample("bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml");
    let a = analyze(Some(&examples_mesh()), std::slice::from_ref(&sample)).unwrap();
    for field in [
        "spec.http[0].route[0].destination.host",
        "spec.http[1].route[0].destination.host",
    ] {
        expect(
            &a,
            &Want {
                code: "IST0101",
                level: Level::Error,
                resource: Some(("VirtualService", "default", "reviews")),
                field: Some(field),
                words: &["\"reviews\"", "reviews.default.svc.cluster.local"],
                file: "virtual-service-reviews-jason-v2-v3.yaml",
            },
        );
    }
    assert!(a.has_errors());
    assert!(render(&a).starts_with("Error [IST0101] (VirtualService default/reviews)"));
}

#[test]
fn istio_sample_against_istios_bookinfo_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster1");
    std::fs::create_dir(&cluster).unwrap();
    // Istio's unmodified bookinfo, read through a symlink.
    std::os::unix::fs::symlink(
        istio_sample("bookinfo/platform/kube/bookinfo.yaml"),
        cluster.join("bookinfo.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH_YAML).unwrap();
    let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
    let paths = [
        istio_sample("bookinfo/networking/destination-rule-all.yaml"),
        istio_sample("bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml"),
    ];
    let a = analyze(Some(&mesh), &paths).unwrap();
    assert!(
        !a.findings.iter().any(|d| d.level <= Level::Warning),
        "{}",
        show(&a)
    );
    assert!(!a.has_errors());
    // 4 Services, 4 ServiceAccounts, 6 Deployments, 4 DestinationRules, 1 VirtualService.
    assert_eq!(a.objects, 19, "{}", show(&a));

    // Without destination-rule-all.yaml, subsets v2 and v3 are not defined.
    let a = analyze(Some(&mesh), &paths[1..]).unwrap();
    for (field, subset) in [
        ("spec.http[0].route[0].destination.subset", "reviews+v2"),
        ("spec.http[1].route[0].destination.subset", "reviews+v3"),
    ] {
        expect(
            &a,
            &Want {
                code: "IST0101",
                level: Level::Error,
                resource: Some(("VirtualService", "default", "reviews")),
                field: Some(field),
                words: &[subset],
                file: "virtual-service-reviews-jason-v2-v3.yaml",
            },
        );
    }
}

#[test]
fn istio_samples_use_only_enforced_fields_but_for_auto_passthrough() {
    // Each file alone: several define objects of the same name.
    let mut got = Vec::new();
    let mut files = 0;
    for dir in [
        "bookinfo/networking",
        "bookinfo/platform/kube",
        "curl",
        "helloworld",
        "multicluster",
        "sleep",
    ] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(istio_sample(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        paths.sort();
        for p in paths {
            files += 1;
            let a = analyze(None, std::slice::from_ref(&p)).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            got.extend(not_enforced(&a).into_iter().map(|f| format!("{name}: {f}")));
        }
    }
    assert!(files >= 28, "{files}");
    // Mesh mTLS (destination-rule-all-mtls.yaml) is enforced; AUTO_PASSTHROUGH not yet.
    assert_eq!(
        got,
        [
            "expose-services.yaml: Gateway default/cross-network-gateway spec.servers[0].tls.mode"
                .to_string(),
        ]
    );
}

// ---------------------------------------------------------------------------
// Regressions: cases that once went wrong

#[test]
fn the_same_config_in_two_config_clusters_is_one_object() {
    // Multi-primary: the same Istio config is applied to each primary cluster, and the
    // registry keeps one object per kind/namespace/name.
    let dir = tempfile::tempdir().unwrap();
    for c in ["cluster1", "cluster2"] {
        std::fs::create_dir(dir.path().join(c)).unwrap();
        std::fs::write(dir.path().join(c).join("workloads.yaml"), WORKLOADS).unwrap();
        std::fs::write(
            dir.path().join(c).join("istio-config.yaml"),
            docs(&[
                &dr_reviews(),
                &vs_reviews("- destination: {host: reviews, subset: v1}\n"),
            ]),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "configClusters: [cluster1, cluster2]\nclusters:\n- name: cluster1\n  network: network1\n  source: {manifests: cluster1}\n- name: cluster2\n  network: network1\n  source: {manifests: cluster2}\n",
    )
    .unwrap();
    let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
    let a = analyze(Some(&mesh), &[]).unwrap();
    assert_clean(&a);
}

#[test]
fn a_legacy_gateway_name_is_resolved() {
    let env = Env::new();
    let vs = |gw: &str, ns: &str| {
        obj(
            "VirtualService",
            ns,
            "reviews",
            &format!(
                "hosts: [reviews]\ngateways: [{gw}]\nhttp:\n- match:\n  - gateways: [{gw}]\n  route:\n  - destination: {{host: reviews.bookinfo.svc.cluster.local}}\n"
            ),
        )
    };
    let gw = gateway("{istio: ingressgateway}", "80");
    // The legacy forms resolve to istio-system/ingress (validation only warns, at the
    // top and in the match, that `namespace/name` is preferred).
    for legacy in [
        "ingress.istio-system",
        "ingress.istio-system.svc.cluster.local",
    ] {
        let a = env.analyze(&[("vs.yaml", &vs(legacy, "bookinfo")), ("gw.yaml", &gw)]);
        assert!(!a.has_errors(), "{legacy}:\n{}", show(&a));
        for field in ["spec.gateways[0]", "spec.http[0].match[0].gateways[0]"] {
            expect(
                &a,
                &Want {
                    code: "IST0106",
                    level: Level::Warning,
                    resource: Some(("VirtualService", "bookinfo", "reviews")),
                    field: Some(field),
                    words: &["legacy", "\"istio-system/ingress\""],
                    file: "vs.yaml",
                },
            );
        }
        assert_eq!(a.findings.len(), 2, "{legacy}:\n{}", show(&a));
    }
    // A bare name is in the VirtualService's namespace.
    assert_clean(&env.analyze(&[
        ("vs.yaml", &vs("ingress", "istio-system")),
        ("gw.yaml", &gw),
    ]));
}
