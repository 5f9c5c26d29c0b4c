//! `tally`: parse the command line and run it (see `tally::cli`).

/// mimalloc instead of glibc's malloc: loading a catalog of a million
/// licenses spent most of its time in glibc's free-list upkeep
/// (`unlink_chunk`, `malloc_consolidate`); see docs/performance.md for the
/// figures that decided it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tally::cli::main()
}
