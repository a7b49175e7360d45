//! The `weir` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_policy::FilterConfig;

/// Weir: priority- and SLA-aware traffic steering for device fleets behind Envoy.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check filter plugin configurations (the JSON the filter reads) without loading Envoy.
    CheckFilterConfig {
        /// Files holding a plugin configuration document each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

impl Cli {
    /// Runs the chosen command; the exit code is 0 on success and 1 otherwise.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::CheckFilterConfig { files } => check_filter_configs(&files),
        }
    }
}

fn check_filter_configs(files: &[PathBuf]) -> ExitCode {
    let mut all_valid = true;
    for file in files {
        let shown = file.display();
        match std::fs::read(file) {
            Err(err) => {
                all_valid = false;
                eprintln!("{shown}: cannot read: {err}");
            }
            Ok(bytes) => match FilterConfig::from_json(&bytes) {
                Ok(config) => println!("{shown}: ok (version {:?})", config.version),
                Err(err) => {
                    all_valid = false;
                    eprintln!("{shown}:{}:{}: {}", err.line, err.column, err.message);
                }
            },
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
