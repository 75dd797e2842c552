//! Test helpers for the Istio kinds, and tests across all of them: Istio's own
//! samples parse clean, and every field of the CRD schemas is a field of our types.

use std::path::Path;

use crate::{Diagnostic, Level, parse_documents};

/// The group/version each kind is written with in tests.
fn api_version(kind: &str) -> &'static str {
    if kind == "PeerAuthentication" {
        "security.istio.io/v1"
    } else {
        "networking.istio.io/v1"
    }
}

/// Parses a whole YAML stream and returns every finding.
pub(crate) fn check_yaml(yaml: &str) -> Vec<Diagnostic> {
    parse_documents(Path::new("test.yaml"), yaml, "default", "cluster.local")
        .into_iter()
        .flat_map(|d| d.diagnostics)
        .collect()
}

/// Parses one object of `kind` named `x` in namespace `default` with `spec` (YAML,
/// unindented) and returns every finding.
pub(crate) fn check(kind: &str, spec: &str) -> Vec<Diagnostic> {
    let mut yaml = format!(
        "apiVersion: {}\nkind: {kind}\nmetadata:\n  name: x\n  namespace: default\nspec:\n",
        api_version(kind)
    );
    for line in spec.lines() {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    check_yaml(&yaml)
}

/// Asserts a finding at `field` with `level` whose message contains `needle`.
#[track_caller]
pub(crate) fn assert_issue(d: &[Diagnostic], level: Level, field: &str, needle: &str) {
    let found = d.iter().any(|x| {
        x.level == level && x.field.as_deref() == Some(field) && x.message.contains(needle)
    });
    assert!(
        found,
        "expected {level} at {field} mentioning {needle:?}; got:\n{}",
        d.iter().map(|x| format!("  {x}\n")).collect::<String>()
    );
}

/// Asserts there is no Error.
#[track_caller]
pub(crate) fn assert_clean(d: &[Diagnostic]) {
    let errors: Vec<String> = d
        .iter()
        .filter(|x| x.level == Level::Error)
        .map(|x| format!("  {x}\n"))
        .collect();
    assert!(errors.is_empty(), "unexpected errors:\n{}", errors.concat());
}

const ISTIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio");

#[test]
fn istio_samples_parse_without_errors() {
    let dirs = [
        "samples/bookinfo/networking",
        "samples/helloworld",
        "samples/multicluster",
    ];
    let mut files = 0;
    let mut objects = 0;
    let mut failures = Vec::new();
    for dir in dirs {
        let dir = Path::new(ISTIO).join(dir);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        paths.sort();
        for path in paths {
            files += 1;
            let text = std::fs::read_to_string(&path).expect("readable sample");
            for doc in parse_documents(&path, &text, "default", "cluster.local") {
                objects += usize::from(doc.object.is_some());
                failures.extend(
                    doc.diagnostics
                        .iter()
                        .filter(|d| d.level == Level::Error)
                        .map(|d| d.to_string()),
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "errors in samples:\n{}",
        failures.join("\n")
    );
    assert!(files >= 20, "only {files} sample files found");
    assert!(objects >= 40, "only {objects} objects parsed");
}

/// Every field of the v1 CRD schema of each kind, filled in with a value of its
/// schema type, deserializes with no unknown field and serializes back unchanged.
mod crd_coverage {
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_yaml_ng::{Mapping, Value};

    use super::ISTIO;
    use crate::istio::*;

    fn crds() -> Vec<Value> {
        let path = format!("{ISTIO}/manifests/charts/base/files/crd-all.gen.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("CRD YAML"))
            .collect()
    }

    fn spec_schema(crds: &[Value], kind: &str) -> Value {
        for crd in crds {
            if crd["spec"]["names"]["kind"].as_str() != Some(kind) {
                continue;
            }
            if let Some(versions) = crd["spec"]["versions"].as_sequence() {
                for v in versions {
                    if v["name"].as_str() == Some("v1") {
                        return v["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
                    }
                }
            }
        }
        panic!("no v1 schema for {kind}");
    }

    /// Leaf values used to fill a schema.
    #[derive(Clone, Copy)]
    struct Fill<'a> {
        string: &'a str,
        key: &'a str,
        integer: i64,
        number: f64,
        boolean: bool,
        first_enum: bool,
    }

    const PLAIN: Fill<'static> = Fill {
        string: "x",
        key: "1",
        integer: 1,
        number: 1.5,
        boolean: true,
        first_enum: true,
    };

    /// A value of the schema's type with every property set.
    fn sample(schema: &Value) -> Value {
        fill(schema, PLAIN)
    }

    fn fill(schema: &Value, f: Fill<'_>) -> Value {
        if let Some(e) = schema["enum"].as_sequence() {
            let pick = if f.first_enum { e.first() } else { e.last() };
            if let Some(v) = pick {
                return v.clone();
            }
        }
        match schema["type"].as_str() {
            Some("object") => {
                let mut m = Mapping::new();
                if let Some(props) = schema["properties"].as_mapping() {
                    for (k, v) in props {
                        m.insert(k.clone(), fill(v, f));
                    }
                } else if schema["additionalProperties"].is_mapping() {
                    m.insert(f.key.into(), fill(&schema["additionalProperties"], f));
                }
                Value::Mapping(m)
            }
            Some("array") => {
                Value::Sequence(vec![fill(&schema["items"], f), fill(&schema["items"], f)])
            }
            Some("string") => f.string.into(),
            Some("integer") => f.integer.into(),
            Some("number") => f.number.into(),
            Some("boolean") => f.boolean.into(),
            other => panic!("unexpected schema type {other:?}"),
        }
    }

    /// Odd values everywhere: validation reports, never panics.
    #[test]
    fn odd_values_never_panic() {
        let crds = crds();
        let strings = [
            "",
            "*",
            "*.",
            ".",
            "/",
            "//",
            "~",
            "-",
            ":",
            "[",
            "(a",
            "unix://",
            "unix:///",
            "0",
            "-1s",
            "1.5.5s",
            "ü.é",
            "µs",
            "1µs",
            "10.0.0.0/99",
            "a/b/c/*",
            "*/*",
            "\u{0}",
        ];
        // Integers that fit every integer field type, so deserialization succeeds and
        // validation runs.
        let numbers = [
            (0, 0.0),
            (1, -1.0),
            (65_536, f64::NAN),
            (2_147_483_647, 1e300),
        ];
        let mut validated = 0;
        for kind in [
            "VirtualService",
            "DestinationRule",
            "Gateway",
            "ServiceEntry",
            "WorkloadEntry",
            "Sidecar",
            "PeerAuthentication",
        ] {
            let schema = spec_schema(&crds, kind);
            let group = if kind == "PeerAuthentication" {
                "security"
            } else {
                "networking"
            };
            for (si, s) in strings.iter().enumerate() {
                let (integer, number) = numbers[si % numbers.len()];
                let f = Fill {
                    string: s,
                    key: if si % 2 == 0 { s } else { "65536" },
                    integer,
                    number,
                    boolean: si % 2 == 0,
                    first_enum: si % 3 == 0,
                };
                let mut doc = Mapping::new();
                doc.insert("apiVersion".into(), format!("{group}.istio.io/v1").into());
                doc.insert("kind".into(), kind.into());
                let mut meta = Mapping::new();
                meta.insert("name".into(), "x".into());
                doc.insert("metadata".into(), Value::Mapping(meta));
                doc.insert("spec".into(), fill(&schema, f));
                let text = serde_yaml_ng::to_string(&doc).expect("YAML");
                let parsed = crate::parse_documents(
                    std::path::Path::new("odd.yaml"),
                    &text,
                    "default",
                    "cluster.local",
                );
                assert_eq!(parsed.len(), 1, "{kind} {s:?}");
                // Serde's own errors start with "invalid" / "unknown variant".
                let deserialized = parsed[0].diagnostics.iter().all(|d| {
                    !(d.message.starts_with("invalid") || d.message.starts_with("unknown variant"))
                });
                validated += usize::from(deserialized);
            }
        }
        assert!(
            validated > 100,
            "only {validated} documents reached validation"
        );
    }

    /// JSON with every number as f64 (integers and floats compare equal).
    fn normalize(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::Number(n) => n.as_f64().map_or(J::Null, |f| serde_json::json!(f)),
            J::Array(a) => J::Array(a.into_iter().map(normalize).collect()),
            J::Object(o) => J::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
            other => other,
        }
    }

    fn covers<T: DeserializeOwned + Serialize + Default>(crds: &[Value], kind: &str) {
        let spec = sample(&spec_schema(crds, kind));
        let mut doc = Mapping::new();
        doc.insert("apiVersion".into(), "networking.istio.io/v1".into());
        doc.insert("kind".into(), kind.into());
        doc.insert("spec".into(), spec.clone());
        let (obj, unknown) = crate::document::typed::<IstioConfig<T>>(Value::Mapping(doc))
            .unwrap_or_else(|(path, e)| panic!("{kind}: {path}: {e}"));
        assert!(
            unknown.is_empty(),
            "{kind}: fields missing from the types: {unknown:?}"
        );
        let back = normalize(serde_json::to_value(&obj.spec).expect("serializes"));
        let expected = normalize(serde_json::to_value(&spec).expect("JSON"));
        similar_asserts::assert_eq!(expected, back, "{kind} does not round-trip");
    }

    #[test]
    fn every_crd_field_is_covered() {
        let crds = crds();
        covers::<VirtualService>(&crds, "VirtualService");
        covers::<DestinationRule>(&crds, "DestinationRule");
        covers::<Gateway>(&crds, "Gateway");
        covers::<ServiceEntry>(&crds, "ServiceEntry");
        covers::<WorkloadEntry>(&crds, "WorkloadEntry");
        covers::<Sidecar>(&crds, "Sidecar");
        covers::<PeerAuthentication>(&crds, "PeerAuthentication");
    }
}
