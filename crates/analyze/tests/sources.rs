//! Files that are not YAML text at all — invalid UTF-8, binary garbage, files too
//! large to read — in a cluster's manifest directory or given to `isthmus analyze`:
//! each is one Error naming the file, and the other files still count.

use std::path::{Path, PathBuf};

use isthmus_analyze::analyze;
use isthmus_model::{ClusterId, Diagnostic, Kind, Level, MeshConfig};
use isthmus_registry::ManifestSource;

const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  ports:\n  - {name: http, port: 9080}\n";

/// Deterministic pseudo-random bytes (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The bad inputs: (file name, contents, words of the expected message).
fn bad_files() -> Vec<(&'static str, Vec<u8>, &'static [&'static str])> {
    let mut latin1 = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caf".to_vec();
    latin1.extend_from_slice(b"\xe9\n");
    let mut utf16 = vec![0xff, 0xfe];
    for c in "apiVersion: v1\nkind: Namespace\n".encode_utf16() {
        utf16.extend_from_slice(&c.to_le_bytes());
    }
    let mut huge =
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\ndata:\n  blob: |\n".to_vec();
    while huge.len() < 20 << 20 {
        huge.extend_from_slice(
            b"    0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        );
    }
    // Printable garbage: valid UTF-8 that is no Kubernetes object.
    let text_noise: Vec<u8> = noise(4096, 7)
        .into_iter()
        .map(|b| b" {}[]:-,&*!|>'\"%@`#\tabcxyz019\n"[usize::from(b) % 30])
        .collect();
    vec![
        ("latin1.yaml", latin1, &["not UTF-8"][..]),
        ("utf16.yaml", utf16, &["not UTF-8"][..]),
        (
            "random.yaml",
            noise(64 * 1024, 0x9e37_79b9_7f4a_7c15),
            &["not UTF-8"][..],
        ),
        (
            "elf.yml",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0\x01\0\0\0".to_vec(),
            &[][..],
        ),
        (
            "nul.yaml",
            b"apiVersion: v1\0\nkind: Namespace\n".to_vec(),
            &[][..],
        ),
        ("noise.json", text_noise, &[][..]),
        ("huge.yaml", huge, &["largest file"][..]),
    ]
}

fn file_name(d: &Diagnostic) -> Option<&str> {
    d.file
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
}

fn show(d: &[Diagnostic]) -> String {
    d.iter().map(|x| format!("  {x}\n")).collect()
}

#[test]
fn manifest_source_reports_each_unreadable_file_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    let bad = bad_files();
    for (name, bytes, _) in &bad {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let mut source = ManifestSource::new(
        ClusterId::new("c1"),
        dir.path().to_path_buf(),
        "cluster.local",
    );
    source.rescan(&[]).unwrap();
    let diags = source.diagnostics();
    for (name, _, words) in &bad {
        let mine: Vec<&Diagnostic> = diags
            .iter()
            .filter(|d| file_name(d) == Some(name))
            .collect();
        assert!(
            mine.iter().any(|d| d.is_error()),
            "no Error for {name}; got:\n{}",
            show(&diags)
        );
        if !words.is_empty() {
            assert!(
                mine.iter()
                    .any(|d| d.code == "ISM0001" && words.iter().all(|w| d.message.contains(w))),
                "{name}: expected ISM0001 mentioning {words:?}; got:\n{}",
                show(&diags)
            );
        }
        for d in &mine {
            assert!(d.line.is_some_and(|l| l >= 1), "{d}");
        }
    }
    let objects = source.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].0.kind(), Kind::Service);
    assert_eq!(
        objects[0].1.as_ref().map(|p| p.file.to_path_buf()),
        Some(dir.path().join("good.yaml"))
    );
    assert!(
        !diags.iter().any(|d| file_name(d) == Some("good.yaml")),
        "{}",
        show(&diags)
    );

    // Fixing a file is picked up by the next scan.
    std::fs::write(
        dir.path().join("latin1.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cafe\n",
    )
    .unwrap();
    source.rescan(&[dir.path().join("latin1.yaml")]).unwrap();
    assert!(
        !source
            .diagnostics()
            .iter()
            .any(|d| file_name(d) == Some("latin1.yaml"))
    );
    assert_eq!(source.objects().len(), 2);
}

#[test]
fn empty_and_comment_only_files_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "").unwrap();
    std::fs::write(
        dir.path().join("comments.yaml"),
        "# nothing here\n---\n# nor here\n---\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    let mut source = ManifestSource::new(
        ClusterId::new("c1"),
        dir.path().to_path_buf(),
        "cluster.local",
    );
    source.rescan(&[]).unwrap();
    assert!(
        source.diagnostics().is_empty(),
        "{}",
        show(&source.diagnostics())
    );
    assert_eq!(source.objects().len(), 1);
}

fn mesh_with_cluster_dir(root: &Path) -> MeshConfig {
    std::fs::create_dir_all(root.join("cluster1")).unwrap();
    std::fs::write(
        root.join("mesh.yaml"),
        "clusters:\n- name: cluster1\n  network: network1\n  source:\n    manifests: cluster1\n",
    )
    .unwrap();
    MeshConfig::load(&root.join("mesh.yaml")).unwrap()
}

#[test]
fn analyze_reports_garbage_in_a_cluster_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh_with_cluster_dir(dir.path());
    std::fs::write(dir.path().join("cluster1/good.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("cluster1/random.yaml"), noise(10_000, 42)).unwrap();
    let a = analyze(Some(&mesh), &[]).unwrap();
    assert!(a.has_errors());
    assert_eq!(a.findings.len(), 1, "{}", show(&a.findings));
    let d = &a.findings[0];
    assert_eq!((d.level, d.code), (Level::Error, "ISM0001"));
    assert_eq!(file_name(d), Some("random.yaml"));
    assert!(d.message.contains("not UTF-8"), "{d}");
    assert_eq!(a.objects, 1);
}

#[test]
fn analyze_reports_garbage_in_a_directory_given_as_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("good.yaml"), GOOD).unwrap();
    std::fs::write(config.join("latin1.yaml"), b"kind: caf\xe9\n").unwrap();
    let a = analyze(None, &[config]).unwrap();
    assert_eq!(a.findings.len(), 1, "{}", show(&a.findings));
    assert_eq!(a.findings[0].code, "ISM0001");
    assert_eq!(file_name(&a.findings[0]), Some("latin1.yaml"));
    assert_eq!(a.objects, 1);
}

#[test]
fn analyze_of_a_binary_file_given_as_a_path_fails_or_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("binary.yaml");
    std::fs::write(&good, GOOD).unwrap();
    std::fs::write(&bad, noise(1000, 3)).unwrap();
    // Either the analysis stops with an error naming the file, or it reports the file
    // as a finding.
    match analyze(None, &[good, bad]) {
        Err(e) => assert!(e.to_string().contains("binary.yaml"), "{e}"),
        Ok(a) => {
            assert!(a.has_errors());
            assert!(
                a.findings
                    .iter()
                    .any(|d| d.is_error() && file_name(d) == Some("binary.yaml"))
            );
        }
    }
}

#[test]
fn analyze_of_a_20_mb_file_given_as_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("huge.yaml");
    let (_, bytes, _) = bad_files()
        .into_iter()
        .find(|(n, _, _)| *n == "huge.yaml")
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    let a = analyze(None, &[path]).unwrap();
    assert_eq!(a.findings.len(), 1);
    let d = &a.findings[0];
    assert_eq!(
        (d.level, d.code, d.line),
        (Level::Error, "ISM0001", Some(1))
    );
    assert!(d.message.contains("largest file"), "{d}");
    assert_eq!(file_name(d), Some("huge.yaml"));
}

#[test]
fn a_missing_cluster_directory_is_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "clusters:\n- name: cluster1\n  network: network1\n  source:\n    manifests: nowhere\n",
    )
    .unwrap();
    // Loading the mesh checks the directory; it disappears afterwards.
    std::fs::create_dir(dir.path().join("nowhere")).unwrap();
    let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
    std::fs::remove_dir(dir.path().join("nowhere")).unwrap();
    let a = analyze(Some(&mesh), &[]).unwrap();
    assert!(a.has_errors());
    assert_eq!(a.findings.len(), 1, "{}", show(&a.findings));
    let d = &a.findings[0];
    assert_eq!(d.code, "ISM0003");
    assert!(d.message.contains("nowhere"), "{d}");
    assert!(d.message.contains("cluster1"), "{d}");
    assert_eq!(a.objects, 0);
}
