//! `wasm-bindgen`, the command line of the wasm-bindgen CLI crate, built
//! with this folder's pinned dependencies (see Cargo.toml).
use std::{env, process};

fn main() {
    env_logger::init();
    if let Err(error) = wasm_bindgen_cli::wasm_bindgen::run_cli_with_args(env::args_os()) {
        eprintln!("error: {error:?}");
        process::exit(1);
    }
}
