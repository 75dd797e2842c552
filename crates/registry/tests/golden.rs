//! Golden tests over the bundled example mesh: the merged registry (per hostname, the
//! endpoints with cluster, network and locality) and the discovered gateways, as a
//! human reads them. Regenerate with `UPDATE_GOLDEN=1 cargo test -p isthmus-registry --test golden`
//! and review the diff like code.

use std::path::PathBuf;

use isthmus_model::MeshConfig;
use isthmus_registry::load::load;
use isthmus_registry::report::RegistryReport;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    similar_asserts::assert_eq!(
        expected,
        actual,
        "{} differs; if the change is intended, run with UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}

#[test]
fn example_mesh_registry() {
    let mesh = MeshConfig::load(&root().join("examples/mesh.yaml")).unwrap();
    let loaded = load(&mesh);
    assert!(
        loaded.diagnostics.is_empty(),
        "the example mesh must load clean: {:?}",
        loaded.diagnostics
    );
    let report = RegistryReport::new(&mesh, &loaded.registry.snapshot());
    // Paths in the table are relative to nothing machine-specific: it holds no file names.
    check("examples-registry.txt", &report.to_table());
}
