//! `tally`: parse the command line and run it (see `tally::cli`).

fn main() -> std::process::ExitCode {
    tally::cli::main()
}
