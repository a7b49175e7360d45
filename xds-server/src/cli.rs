//! The `weir` command line.

mod client;
mod explain;
mod policy_file;
mod rollout;
mod status;
mod table;

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
    /// Check policy files; report every problem with file, line and column.
    Validate {
        /// Policy files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the filter's plugin configuration (JSON) for a policy file.
    Compile {
        /// The policy file.
        file: PathBuf,
        /// One line instead of indented JSON.
        #[arg(long)]
        compact: bool,
        /// Have the filter stamp every response with `x-weir-filter: <version>`.
        #[arg(long)]
        version_header: bool,
    },
    /// Show what the filter would decide for a request, stage by stage.
    Explain(explain::ExplainArgs),
    /// Print the JSON Schema of the policy format, for editors.
    Schema,
    /// Serve Envoy its whole configuration from a policy file, over ADS.
    Serve(Box<crate::serve::ServeArgs>),
    /// Show a running weir's rollouts, clusters' SLA scores and connected Envoys.
    Status(client::ClientArgs),
    /// Pause, resume, promote or abort a rollout, or show its history.
    Rollout(rollout::RolloutArgs),
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
        let ok = match self.command {
            Command::Validate { files } => policy_file::validate_all(&files),
            Command::Compile {
                file,
                compact,
                version_header,
            } => policy_file::compile(&file, compact, version_header),
            Command::Explain(args) => explain::run(&args),
            Command::Schema => print_json(&weir_policy::schema(), false),
            Command::Serve(args) => serve(*args),
            Command::Status(args) => remote(status::run(&args)),
            Command::Rollout(args) => remote(rollout::run(&args)),
            Command::CheckFilterConfig { files } => check_filter_configs(&files),
        };
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize, compact: bool) -> bool {
    let text = if compact {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    match text {
        Ok(text) => emit(&format!("{text}\n")),
        Err(err) => {
            eprintln!("error: cannot render JSON: {err}");
            false
        }
    }
}

/// Prints what a command that talks to `weir serve` produced, or its failure in one line.
fn remote(result: Result<String, client::Failure>) -> bool {
    match result {
        Ok(text) => emit(&text),
        Err(failure) => {
            eprintln!("error: {failure}");
            false
        }
    }
}

fn serve(args: crate::serve::ServeArgs) -> bool {
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return false;
        }
    };
    match runtime.block_on(crate::serve::run(args)) {
        Ok(()) => true,
        Err(err) => {
            tracing::error!("{err:#}");
            false
        }
    }
}

/// Structured logs on stderr: `WEIR_LOG` (or `RUST_LOG`) filters them,
/// `WEIR_LOG_FORMAT=json` makes them JSON lines.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEIR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("WEIR_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Writes to stdout. A closed pipe (`weir compile … | head`) is not an error.
fn emit(text: &str) -> bool {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => true,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => true,
        Err(err) => {
            eprintln!("error: cannot write to stdout: {err}");
            false
        }
    }
}

fn check_filter_configs(files: &[PathBuf]) -> bool {
    let mut all_valid = true;
    for file in files {
        let shown = file.display();
        match std::fs::read(file) {
            Err(err) => {
                all_valid = false;
                eprintln!("{shown}: cannot read: {err}");
            }
            Ok(bytes) => match FilterConfig::from_json(&bytes) {
                Ok(config) => {
                    emit(&format!("{shown}: ok (version {:?})\n", config.version));
                }
                Err(err) => {
                    all_valid = false;
                    eprintln!("{shown}:{}:{}: {}", err.line, err.column, err.message);
                }
            },
        }
    }
    all_valid
}
