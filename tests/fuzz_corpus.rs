//! Every fuzz target (`tally::fuzzing::TARGETS`) on every file of its corpus
//! (`fuzz/corpus/<target>/`) and of its recorded findings
//! (`fuzz/regressions/<target>/`: each crash or hang the fuzzer found, kept
//! once fixed): none may panic. This is how CI runs the targets on each
//! change; `scripts/fuzz.sh` fuzzes them for real.

use std::path::Path;

#[test]
fn every_target_survives_its_corpus_and_its_findings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    for (name, target) in tally::fuzzing::TARGETS {
        let mut files = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let data = std::fs::read(&path).expect("readable corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
                files += 1;
            }
        }
        assert!(files > 0, "{name} has no corpus (fuzz/corpus/{name}/)");
        ran += files;
    }
    println!(
        "{ran} corpus files through {} targets",
        tally::fuzzing::TARGETS.len()
    );
}

/// Bytes the fuzzer likes to try, through every target: empty, huge
/// numbers, deep nesting, invalid UTF-8.
#[test]
fn every_target_survives_hostile_bytes() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 64],
        deep.into_bytes(),
        br#"{"tenants":[{"name":"t","licenses":[{"product":"nope"}]}]}"#.to_vec(),
        b"1e999999999".to_vec(),
        b"%%%%%%%%".to_vec(),
        vec![0u8; 100_000],
    ];
    for (name, target) in tally::fuzzing::TARGETS {
        for input in &inputs {
            let outcome = std::panic::catch_unwind(|| target(input));
            assert!(
                outcome.is_ok(),
                "{name} panicked on {:?}",
                &input[..input.len().min(32)]
            );
        }
    }
}
