//! `tally`: parse the command line and run it (see `tally::cli`).
#![allow(
    unsafe_code,
    reason = "mimalloc's collect, an FFI call; see collect_freed"
)]

/// mimalloc instead of glibc's malloc: loading a catalog of a million
/// licenses spent most of its time in glibc's free-list upkeep
/// (`unlink_chunk`, `malloc_consolidate`); see docs/performance.md for the
/// figures that decided it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes mimalloc give the calling thread's freed memory back now (it
/// otherwise does so lazily, on the thread's later allocations: a password
/// worker that sleeps after dropping its argon2 memory would keep it).
fn collect_freed() {
    // SAFETY: mi_collect has no preconditions; it may be called from any
    // thread at any time (mimalloc's documentation).
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> std::process::ExitCode {
    tally::util::set_release_freed(collect_freed);
    tally::cli::main()
}
