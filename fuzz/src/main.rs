//! One AFL++ binary for every fuzz target: `TALLY_FUZZ_TARGET` names the
//! target (see `tally::fuzzing::TARGETS`); `scripts/fuzz.sh` runs them all.

fn main() {
    let name = std::env::var("TALLY_FUZZ_TARGET").unwrap_or_default();
    let Some(target) = tally::fuzzing::target(&name) else {
        let names: Vec<&str> = tally::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("set TALLY_FUZZ_TARGET to one of: {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
