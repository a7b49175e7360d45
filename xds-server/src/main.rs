//! `weir`: Weir's control server and command-line tool.

use std::process::ExitCode;

use clap::Parser;

// OTLP ingestion decodes many small strings and vectors per request; glibc's
// malloc was about a third of weir's CPU under load (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    weir::cli::Cli::parse().run()
}
