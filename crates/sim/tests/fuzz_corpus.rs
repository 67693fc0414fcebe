//! Replays the committed fuzz corpora through the fuzz targets' bodies, so the normal test run
//! exercises them on stable.

use std::path::Path;

#[test]
fn fault_spec_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/fault_spec");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        sim::fuzzing::fault_spec(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 10, "only {n} files in {}", dir.display());
}
