//! Parser robustness: malformed input run through `parse_documents` yields Error
//! findings that point at a field or a line — never a panic, never an object — and
//! the other documents of the same file still parse.

use std::path::{Path, PathBuf};

use isthmus_model::{Diagnostic, Kind, Level, Object, ParsedDocument, parse_documents};

const FILE: &str = "malformed.yaml";

fn parse(text: &str) -> Vec<ParsedDocument> {
    parse_documents(Path::new(FILE), text, "default", "cluster.local")
}

fn show(d: &[Diagnostic]) -> String {
    d.iter().map(|x| format!("  {x}\n")).collect()
}

const BEFORE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: before\n";
const AFTER: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: after\n";
/// The line the middle document of [`sandwich`] starts on.
const BAD_LINE: usize = 6;

/// Asserts `doc` is the valid Namespace `name`, without findings.
#[track_caller]
fn assert_namespace(doc: &ParsedDocument, name: &str) {
    assert!(
        doc.diagnostics.is_empty(),
        "{name}:\n{}",
        show(&doc.diagnostics)
    );
    let Some(Object::Namespace(ns)) = &doc.object else {
        panic!("expected Namespace {name}, got {:?}", doc.object);
    };
    assert_eq!(ns.metadata.name.as_deref(), Some(name));
}

/// Parses `bad` as the second of three documents; checks that the first and the
/// third still parse, that the middle one has an Error and no object, and that every
/// finding names the file, the document and a line inside it. Returns the middle
/// document.
#[track_caller]
fn sandwich(bad: &str) -> ParsedDocument {
    let bad = bad.strip_suffix('\n').unwrap_or(bad);
    let text = format!("{BEFORE}---\n{bad}\n---\n{AFTER}");
    let mut docs = parse(&text);
    assert_eq!(
        docs.len(),
        3,
        "{:#?}",
        docs.iter().map(|d| &d.diagnostics).collect::<Vec<_>>()
    );
    assert_namespace(&docs[0], "before");
    assert_namespace(&docs[2], "after");
    let mid = docs.swap_remove(1);
    assert_eq!(mid.pos.document, 1);
    assert_eq!(mid.pos.line, BAD_LINE);
    assert!(mid.object.is_none(), "an object from a broken document");
    assert!(
        mid.diagnostics.iter().any(Diagnostic::is_error),
        "no Error for:\n{bad}\ngot:\n{}",
        show(&mid.diagnostics)
    );
    let last_line = BAD_LINE + bad.lines().count().max(1) - 1;
    for d in &mid.diagnostics {
        assert_eq!(d.file.as_deref(), Some(Path::new(FILE)), "{d}");
        assert_eq!(d.document, Some(1), "{d}");
        let line = d.line.expect("a line");
        assert!(
            (BAD_LINE..=last_line + 1).contains(&line),
            "line {line} is outside the document (lines {BAD_LINE}..={last_line}): {d}"
        );
    }
    mid
}

/// Asserts an Error with `code` at `field` (None: no field) whose message contains
/// every word of `words`.
#[track_caller]
fn assert_error(doc: &ParsedDocument, code: &str, field: Option<&str>, words: &[&str]) {
    let found = doc.diagnostics.iter().any(|d| {
        d.level == Level::Error
            && d.code == code
            && d.field.as_deref() == field
            && words.iter().all(|w| d.message.contains(w))
    });
    assert!(
        found,
        "expected Error [{code}] at {field:?} mentioning {words:?}; got:\n{}",
        show(&doc.diagnostics)
    );
}

// ---------------------------------------------------------------------------
// Not a Kubernetes object

#[test]
fn a_document_that_is_a_list() {
    let d = sandwich("- apiVersion: v1\n  kind: Namespace\n- b\n");
    assert_error(&d, "IST0106", None, &["must be a mapping"]);
    assert_eq!(d.diagnostics[0].line, Some(BAD_LINE));
    assert!(d.key.is_none());
}

#[test]
fn a_document_that_is_a_scalar() {
    for scalar in ["just some text", "42", "true", "\"quoted\"", "|\n  block\n"] {
        let d = sandwich(scalar);
        assert_error(&d, "IST0106", None, &["must be a mapping"]);
    }
}

#[test]
fn missing_api_version_or_kind() {
    let d = sandwich("kind: Service\nmetadata:\n  name: a\n");
    assert_error(&d, "IST0106", Some("apiVersion"), &["no apiVersion"]);
    let d = sandwich("apiVersion: v1\nmetadata:\n  name: a\n");
    assert_error(&d, "IST0106", Some("kind"), &["no kind"]);
    // Present but not strings.
    let d = sandwich("apiVersion: 1\nkind: Service\nmetadata:\n  name: a\n");
    assert_error(&d, "IST0106", Some("apiVersion"), &["no apiVersion"]);
    let d = sandwich("apiVersion: v1\nkind: [Service]\nmetadata:\n  name: a\n");
    assert_error(&d, "IST0106", Some("kind"), &["no kind"]);
    let d = sandwich("apiVersion: v1\nkind:\nmetadata:\n  name: a\n");
    assert_error(&d, "IST0106", Some("kind"), &["no kind"]);
}

#[test]
fn an_unserved_api_version() {
    let d = sandwich(
        "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n",
    );
    assert_error(
        &d,
        "IST0106",
        Some("apiVersion"),
        &[
            "not served as networking.istio.io/v2",
            "networking.istio.io/v1",
        ],
    );
    let r = d.diagnostics[0].resource.as_ref().expect("the resource");
    assert_eq!(
        (r.kind.as_str(), r.namespace.as_deref(), r.name.as_str()),
        ("VirtualService", Some("default"), "a")
    );
    let d = sandwich("apiVersion: v2\nkind: Service\nmetadata:\n  name: a\n");
    assert_error(&d, "IST0106", Some("apiVersion"), &["not served as v2"]);
    let d = sandwich("apiVersion: apps/v1beta1\nkind: Deployment\nmetadata:\n  name: a\n");
    assert_error(&d, "IST0106", Some("apiVersion"), &["apps/v1"]);
}

#[test]
fn metadata_that_is_not_a_mapping() {
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\nmetadata: 3\n");
    assert_error(&d, "IST0106", Some("metadata.name"), &["required"]);
    assert_error(
        &d,
        "IST0106",
        Some("metadata"),
        &["invalid type: integer `3`", "ObjectMeta"],
    );
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\nmetadata: [a, b]\n");
    assert_error(&d, "IST0106", Some("metadata.name"), &["required"]);
    let d = sandwich(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: reviews\nspec:\n  host: reviews\n",
    );
    assert_error(&d, "IST0106", Some("metadata.name"), &["required"]);
}

#[test]
fn bad_names_and_namespaces() {
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n");
    assert_error(&d, "IST0106", Some("metadata.name"), &["\"Bad_Name\""]);
    let d = sandwich(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n  namespace: Not.A.Label\n",
    );
    assert_error(
        &d,
        "IST0106",
        Some("metadata.namespace"),
        &["\"Not.A.Label\""],
    );
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 5\n");
    assert_error(&d, "IST0106", Some("metadata.name"), &["required"]);
}

// ---------------------------------------------------------------------------
// Wrong types, at every depth

#[test]
fn wrong_types_name_their_field() {
    let vs = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n{spec}"
        )
    };
    let dr = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n{spec}"
        )
    };
    let gw = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n{spec}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: eighty\n".into(),
            "spec.ports[0].port",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports: {port: 80}\n".into(),
            "spec.ports",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  labels:\n    app: [x]\n".into(),
            "metadata.labels.app",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: nginx\n".into(),
            "spec.containers",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: many\n  selector: {}\n  template: {}\n".into(),
            "spec.replicas",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  key: [1, 2]\n".into(),
            "data.key",
        ),
        (vs("  hosts: reviews\n  http:\n  - route:\n    - destination: {host: reviews}\n"), "spec.hosts"),
        (vs("  hosts: [reviews]\n  http:\n    route: []\n"), "spec.http"),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: \"fifty\"\n"),
            "spec.http[0].route[0].weight",
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: 1.5\n"),
            "spec.http[0].route[0].weight",
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: reviews\n"),
            "spec.http[0].route[0].destination",
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - match:\n    - uri: /api\n    route:\n    - destination: {host: reviews}\n"),
            "spec.http[0].match[0].uri",
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, port: {number: http}}\n"),
            "spec.http[0].route[0].destination.port.number",
        ),
        (dr("  host: [reviews]\n"), "spec.host"),
        (
            dr("  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: lots\n"),
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        ),
        (dr("  host: reviews\n  subsets:\n  - name: v1\n    labels: [version]\n"), "spec.subsets[0].labels"),
        (dr("  host: reviews\n  trafficPolicy:\n    tls:\n      mode: STRICTEST\n"), "spec.trafficPolicy.tls.mode"),
        (
            gw("  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: -1, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n"),
            "spec.servers[0].port.number",
        ),
        (gw("  selector: [istio]\n  servers: []\n"), "spec.selector"),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n  hosts: [a.example.com]\n  ports:\n  - {number: 1.5, name: http, protocol: HTTP}\n".into(),
            "spec.ports[0].number",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\nspec:\n  egress: {hosts: [\"./*\"]}\n".into(),
            "spec.egress",
        ),
        ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec: 7\n".into(), "spec"),
    ];
    for (yaml, field) in &cases {
        let d = sandwich(yaml);
        let hit = d.diagnostics.iter().any(|x| {
            x.is_error()
                && x.code == "IST0106"
                && x.field.as_deref() == Some(field)
                && x.resource.is_some()
        });
        assert!(
            hit,
            "expected an IST0106 Error at {field} for:\n{yaml}\ngot:\n{}",
            show(&d.diagnostics)
        );
    }
}

#[test]
fn a_mistyped_key_is_an_unknown_field() {
    let d = sandwich(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [reviews]\n  http:\n  - rout:\n    - destination: {host: reviews}\n",
    );
    assert_error(&d, "ISM0002", Some("spec.http[0].rout"), &["\"rout\""]);
}

// ---------------------------------------------------------------------------
// Not YAML

#[test]
fn tabs_for_indentation() {
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: x\n");
    assert_error(&d, "ISM0001", None, &["not valid YAML"]);
    let line = d.diagnostics[0].line.unwrap();
    assert!(
        (BAD_LINE + 2..=BAD_LINE + 3).contains(&line),
        "line {line}: {}",
        d.diagnostics[0]
    );
}

#[test]
fn syntax_errors_point_at_their_line() {
    for (bad, err_line) in [
        // An unclosed flow sequence.
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n",
            3,
        ),
        // An unclosed quote.
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"x\n",
            3,
        ),
        // A bad escape in a double-quoted string.
        ("apiVersion: v1\nkind: ConfigMap\ndata:\n  k: \"\\q\"\n", 3),
        // A mapping value where none may be.
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: name: x\n", 2),
        // Indentation that closes nothing.
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n    name: x\n  labels: {}\n",
            4,
        ),
        // An alias to an anchor that doesn't exist.
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: *meta\n", 2),
    ] {
        let d = sandwich(bad);
        assert_error(&d, "ISM0001", None, &["not valid YAML"]);
        let line = d.diagnostics[0].line.unwrap();
        assert!(
            line.abs_diff(BAD_LINE + err_line) <= 1,
            "expected line ~{} for:\n{bad}\ngot {}",
            BAD_LINE + err_line,
            d.diagnostics[0]
        );
    }
}

#[test]
fn control_characters() {
    // The parser reports a byte position, not a line: the document's start is used.
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\ndata:\n  k: \"a\u{1}b\"\n");
    assert_error(&d, "ISM0001", None, &["control characters"]);
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\u{0}b\n");
    assert!(d.diagnostics.iter().any(Diagnostic::is_error));
}

#[test]
fn duplicate_keys() {
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n");
    assert_error(&d, "ISM0001", None, &["duplicate entry with key \"name\""]);
    assert_eq!(d.diagnostics[0].line, Some(BAD_LINE + 3));
    let d = sandwich("apiVersion: v1\nkind: ConfigMap\nkind: Service\nmetadata:\n  name: a\n");
    assert_error(&d, "ISM0001", None, &["duplicate entry with key \"kind\""]);
}

#[test]
fn an_alias_bomb_finishes_quickly() {
    // "Billion laughs": 9 levels of 9 aliases each would expand to 9^9 strings.
    let mut bomb = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\nx:\n");
    bomb.push_str(
        "  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("  {name}: &{name} [{refs}]\n"));
    }
    let d = sandwich(&bomb);
    assert_error(&d, "ISM0001", None, &["repetition limit exceeded"]);

    // A bomb of 10 levels of 10 in a field that is read: free-form status.
    let mut bomb = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: lol\nspec:\n  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\nstatus:\n  lols:\n",
    );
    bomb.push_str("  - &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for name in 'b'..='k' {
        bomb.push_str(&format!(
            "  - &{name} [{}]\n",
            vec![format!("*{prev}"); 10].join(", ")
        ));
        prev = name;
    }
    let d = sandwich(&bomb);
    assert_error(&d, "ISM0001", None, &["repetition limit exceeded"]);
}

#[test]
fn ordinary_anchors_and_aliases_parse() {
    let text = format!(
        "{BEFORE}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  labels: &labels {{app: reviews, tier: backend}}\nspec:\n  selector: *labels\n  ports:\n  - &port {{name: http, port: 9080}}\n---\n{AFTER}"
    );
    let docs = parse(&text);
    assert_eq!(docs.len(), 3);
    assert!(
        docs[1].diagnostics.is_empty(),
        "{}",
        show(&docs[1].diagnostics)
    );
    let Some(Object::Service(svc)) = &docs[1].object else {
        panic!("no Service")
    };
    assert_eq!(
        svc.spec.as_ref().unwrap().selector.as_ref().unwrap()["tier"],
        "backend"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // Flow collections are scanned in quadratic time (see the ignored test below), so
    // only one case is 10,000 deep and the others 2,000: all far past the limit of 128.
    let n = 10_000;
    let m = 2_000;
    let cases = [
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {}",
            "[".repeat(n)
        ),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {}{}",
            "[".repeat(m),
            "]".repeat(m)
        ),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {}1{}",
            "{a: ".repeat(m),
            "}".repeat(m)
        ),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata:\n  k:\n    {}x",
            "- ".repeat(n)
        ),
    ];
    for bad in &cases {
        // Run on half the default stack of a Rust thread (and of a tokio worker): a
        // recursive descent without a depth limit overflows it.
        let bad = bad.clone();
        let d = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || sandwich(&bad))
            .unwrap()
            .join()
            .expect("no panic or stack overflow");
        assert!(
            d.diagnostics.iter().any(|x| x.is_error()),
            "{}",
            show(&d.diagnostics)
        );
    }
}

#[test]
fn deep_flow_nesting_is_rejected_quickly() {
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {}",
        "[".repeat(100_000)
    );
    let docs = parse(&text);
    assert!(docs[0].diagnostics.iter().any(Diagnostic::is_error));
}

#[test]
fn nesting_within_the_limit_parses() {
    // 120 levels (the YAML parser allows 128) of free-form status, on half the default
    // thread stack.
    let n = 120;
    let text = format!(
        "{BEFORE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: deep\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {{host: a}}\nstatus: {}1{}\n",
        "{a: [".repeat(n / 2),
        "]}".repeat(n / 2)
    );
    let docs = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || parse(&text))
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert_namespace(&docs[0], "before");
    assert!(
        docs[1].diagnostics.is_empty(),
        "{}",
        show(&docs[1].diagnostics)
    );
    assert!(matches!(docs[1].object, Some(Object::VirtualService(_))));
}

#[test]
fn separators_crlf_and_document_end_markers() {
    let docs = parse(
        "apiVersion: v1\r\nkind: Namespace\r\nmetadata:\r\n  name: before\r\n--- # comment\r\napiVersion: v1\r\nkind: Namespace\r\nmetadata:\r\n  name: after\r\n",
    );
    assert_eq!(docs.len(), 2);
    assert_namespace(&docs[0], "before");
    assert_namespace(&docs[1], "after");
    assert_eq!(docs[1].pos.line, 6);
    let docs = parse(&format!("{BEFORE}...\n---\n{AFTER}---\n---\n"));
    assert_eq!(docs.len(), 2);
    assert_namespace(&docs[0], "before");
    assert_namespace(&docs[1], "after");
    // A block scalar cut by a separator: the rest is a document of its own, and wrong.
    let d = sandwich("    more text\n    of a block scalar\n");
    assert_error(&d, "IST0106", None, &["must be a mapping"]);
}

/// Every document that is in the text is either parsed or reported.
#[track_caller]
fn assert_nothing_lost(text: &str, names: &[&str]) {
    let docs = parse(text);
    for name in names {
        let parsed = docs.iter().any(|d| {
            d.object
                .as_ref()
                .is_some_and(|o| o.meta().name.as_deref() == Some(*name))
        });
        let reported = docs
            .iter()
            .any(|d| d.diagnostics.iter().any(Diagnostic::is_error));
        assert!(
            parsed || reported,
            "Namespace {name} is neither parsed nor reported in:\n{text}\ngot: {:#?}",
            docs.iter()
                .map(|d| (&d.pos, &d.object, &d.diagnostics))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn content_on_a_separator_line_is_not_lost() {
    assert_nothing_lost(
        &format!("{BEFORE}--- {{apiVersion: v1, kind: Namespace, metadata: {{name: inline}}}}\n"),
        &["before", "inline"],
    );
    assert_nothing_lost(
        "--- {\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"json\"}}\n",
        &["json"],
    );
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let docs = parse(&format!("\u{feff}{BEFORE}---\n{AFTER}"));
    assert_eq!(docs.len(), 2);
    assert_namespace(&docs[0], "before");
    assert_namespace(&docs[1], "after");
}

#[test]
fn a_yaml_directive_is_accepted() {
    let docs = parse(&format!("%YAML 1.2\n---\n{BEFORE}"));
    assert!(
        docs.iter().all(|d| d.diagnostics.is_empty()),
        "{:#?}",
        docs.iter().map(|d| &d.diagnostics).collect::<Vec<_>>()
    );
    assert_namespace(docs.last().unwrap(), "before");
}

// ---------------------------------------------------------------------------
// Size

#[test]
fn a_20_mb_file_is_reported_not_parsed() {
    let mut text = String::with_capacity(21 << 20);
    text.push_str(BEFORE);
    text.push_str(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\ndata:\n  blob: |\n",
    );
    let line = format!("    {}\n", "x".repeat(95));
    while text.len() < 20 << 20 {
        text.push_str(&line);
    }
    let docs = parse(&text);
    assert_eq!(docs.len(), 1);
    let d = &docs[0];
    assert!(d.object.is_none());
    assert_error(d, "ISM0001", None, &["bytes", "largest file", "split it"]);
    assert_eq!(d.diagnostics[0].line, Some(1));
    assert_eq!(d.diagnostics[0].file.as_deref(), Some(Path::new(FILE)));
}

#[test]
fn a_5_mb_config_map_parses() {
    let mut text = String::from(BEFORE);
    text.push_str(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: |\n",
    );
    let line = format!("    {}\n", "y".repeat(95));
    let mut lines = 0;
    while text.len() < 5 << 20 {
        text.push_str(&line);
        lines += 1;
    }
    text.push_str("  other: small\n---\n");
    text.push_str(AFTER);
    let docs = parse(&text);
    assert_eq!(docs.len(), 3);
    assert_namespace(&docs[0], "before");
    assert_namespace(&docs[2], "after");
    assert!(
        docs[1].diagnostics.is_empty(),
        "{}",
        show(&docs[1].diagnostics)
    );
    let Some(Object::ConfigMap(cm)) = &docs[1].object else {
        panic!("no ConfigMap");
    };
    let data = cm.data.as_ref().unwrap();
    assert_eq!(data["blob"].len(), lines * 96);
    assert_eq!(data["other"], "small");
}

// ---------------------------------------------------------------------------
// Truncated files

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/istio/samples")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn istio_samples_cut_anywhere_never_panic() {
    let mut files = Vec::new();
    yaml_files(&samples_dir(), &mut files);
    assert!(files.len() >= 10, "only {} sample files", files.len());
    let (mut cuts, mut with_errors) = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let whole = parse_documents(file, &text, "default", "cluster.local");
        let len = text.len();
        let mut offsets: Vec<usize> = (1..12).map(|k| len * k / 12).collect();
        offsets.extend([1, 2, 7, len.saturating_sub(1)]);
        for mut at in offsets {
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let cut = &text[..at];
            let docs = parse_documents(file, cut, "default", "cluster.local");
            cuts += 1;
            if docs
                .iter()
                .any(|d| d.diagnostics.iter().any(Diagnostic::is_error))
            {
                with_errors += 1;
            }
            let last = docs.iter().map(|d| d.pos.document).max();
            for d in &docs {
                if d.diagnostics.iter().any(Diagnostic::is_error) {
                    assert!(
                        d.object.is_none(),
                        "{}@{at}: an object with errors",
                        file.display()
                    );
                }
                for x in &d.diagnostics {
                    assert_eq!(x.file.as_deref(), Some(file.as_path()));
                    let line = x.line.expect("a line");
                    assert!(
                        line >= 1 && line <= cut.lines().count() + 1,
                        "{}@{at}: {x}",
                        file.display()
                    );
                }
                // Documents before the one that was cut parse as in the whole file.
                if Some(d.pos.document) != last {
                    let full = whole
                        .iter()
                        .find(|w| w.pos.document == d.pos.document)
                        .expect("the same document in the whole file");
                    assert_eq!(d.object, full.object, "{}@{at}", file.display());
                    assert_eq!(d.diagnostics, full.diagnostics, "{}@{at}", file.display());
                }
            }
        }
    }
    assert!(
        with_errors * 4 >= cuts,
        "only {with_errors} of {cuts} truncated files had an Error"
    );
}

#[test]
fn truncated_documents_report_errors() {
    // Cuts that leave something YAML can't read, or an object that isn't complete.
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v1\n      weight: 100\n";
    for cut in [
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  - reviews\n  http:\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: \"revi",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: \n",
        "apiVersion: networking.istio.io/v1\n",
    ] {
        assert!(vs.len() > cut.len());
        sandwich(cut);
    }
}

#[test]
fn sample_objects_still_parse_after_a_broken_neighbour() {
    // Istio's own sample, with a broken document spliced in after its first.
    let file = samples_dir().join("bookinfo/networking/destination-rule-all.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let whole = parse_documents(&file, &text, "default", "cluster.local");
    let good = whole.iter().filter(|d| d.object.is_some()).count();
    assert!(good >= 4, "{good}");
    let (first, rest) = text.split_once("\n---").unwrap();
    let spliced = format!("{first}\n---\nspec:\n\thost: [\n---{rest}");
    let docs = parse_documents(&file, &spliced, "default", "cluster.local");
    assert_eq!(docs.iter().filter(|d| d.object.is_some()).count(), good);
    let broken: Vec<&ParsedDocument> = docs.iter().filter(|d| d.object.is_none()).collect();
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].diagnostics[0].code, "ISM0001");
    assert_eq!(broken[0].diagnostics[0].document, Some(1));
    let objs: Vec<Kind> = docs
        .iter()
        .filter_map(|d| d.object.as_ref())
        .map(Object::kind)
        .collect();
    assert!(objs.iter().all(|k| *k == Kind::DestinationRule));
}

/// YAML that kubectl accepts is accepted: an IPv6 address ending in `::` inside a flow
/// sequence (Go's YAML scanner reads it whole, libyaml alone would refuse it).
#[test]
fn ipv6_addresses_in_a_flow_sequence_parse_as_kubectl_reads_them() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: ext\nspec:\n  hosts: [ext.example.com]\n  addresses: [198.18.0.1, 2001:db8::]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 2001:db8::}]\n";
    let docs = parse(text);
    assert_eq!(docs.len(), 1);
    assert!(
        docs[0].diagnostics.iter().all(|d| d.level != Level::Error),
        "{}",
        show(&docs[0].diagnostics)
    );
    let Some(Object::ServiceEntry(se)) = &docs[0].object else {
        panic!("expected a ServiceEntry, got {:?}", docs[0].object);
    };
    assert_eq!(se.spec.addresses, ["198.18.0.1", "2001:db8::"]);
    let endpoints = se.spec.endpoints.as_deref().unwrap_or_default();
    assert_eq!(endpoints[0].address.as_deref(), Some("2001:db8::"));
}
