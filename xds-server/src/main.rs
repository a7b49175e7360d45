//! `weir`: Weir's control server and command-line tool.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    weir::cli::Cli::parse().run()
}
