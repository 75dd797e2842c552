//! The fuzz target's seeds and past findings (crates/xds/fuzz/corpus) through the same
//! checks the fuzz target makes: the request decoders neither panic nor disagree with
//! prost on them.

use std::path::PathBuf;

#[test]
fn the_fuzz_corpus_decodes_as_prost_decodes_it() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/requests");
    let mut read = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        assert!(
            isthmus_xds::server::fuzz_requests(&data) > 0,
            "{}: no request read",
            path.display()
        );
        read += 1;
    }
    assert!(read >= 5, "the seeds are in {}", dir.display());
}
