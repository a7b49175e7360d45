//! Removes from a proxy-wasm module the `proxy_on_*` exports of callbacks
//! the filter does not implement.
//!
//! The Rust SDK exports every callback of the ABI, and Envoy enters the VM for
//! each one it finds — for every request body chunk, response, trailer and
//! stream end — even when the callback only returns `Continue`. Each entry
//! costs about as much as a host call, so a filter that needs four callbacks
//! per request pays for eight. Envoy skips a callback the module does not
//! export and behaves as if it had returned its default, so the exports are
//! pruned after the build (`scripts/build-filter.sh`).
//!
//! Usage: `weir-wasm-prune IN OUT --keep proxy_on_a,proxy_on_b,…`: every
//! export named `proxy_on_*` that is not kept is removed; other exports
//! (the memory, `malloc`, the ABI version marker) and the code are left as
//! they are.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use wasm_encoder::{ExportKind, ExportSection, RawSection};
use wasmparser::{ExternalKind, Parser, Payload};

/// Callbacks every filter needs: the contexts' life cycle. (The SDK's
/// allocator, through which Envoy writes into the VM, is exported as
/// `malloc` and never pruned.)
const ALWAYS_KEPT: [&str; 3] = [
    "proxy_on_context_create",
    "proxy_on_delete",
    "proxy_on_vm_start",
];

const CALLBACK_PREFIX: &str = "proxy_on_";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, flag, keep] = args.as_slice() else {
        bail!("usage: weir-wasm-prune IN OUT --keep proxy_on_a,proxy_on_b,...");
    };
    if flag != "--keep" {
        bail!("expected --keep, found {flag}");
    }
    let mut kept: BTreeSet<&str> = keep.split(',').map(str::trim).collect();
    kept.extend(ALWAYS_KEPT);
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let (pruned, removed) = prune(&module, &kept)?;
    std::fs::write(output, pruned).with_context(|| format!("writing {output}"))?;
    eprintln!(
        "weir-wasm-prune: {output}: removed {} unused callback exports: {}",
        removed.len(),
        removed.join(", ")
    );
    Ok(())
}

/// The module with every `proxy_on_*` export outside `kept` removed, and the
/// names removed. Sections are copied byte for byte, but for the exports.
fn prune(module: &[u8], kept: &BTreeSet<&str>) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    // A kept name the module lacks is a typo that would silently keep nothing.
    let exported = exports_of(module)?;
    if let Some(missing) = kept.iter().find(|name| !exported.contains(*name)) {
        bail!("kept callback {missing} is not exported by the module");
    }
    let mut out = wasm_encoder::Module::new();
    let mut removed = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.context("parsing the module")?;
        if let Payload::ExportSection(reader) = &payload {
            let mut exports = ExportSection::new();
            for export in reader.clone() {
                let export = export?;
                if export.name.starts_with(CALLBACK_PREFIX) && !kept.contains(export.name) {
                    removed.push(export.name.to_owned());
                    continue;
                }
                exports.export(export.name, kind(export.kind)?, export.index);
            }
            out.section(&exports);
        } else if let Some((id, range)) = payload.as_section() {
            out.section(&RawSection {
                id,
                data: module.get(range).context("a section outside the module")?,
            });
        }
    }
    Ok((out.finish(), removed))
}

fn exports_of(module: &[u8]) -> anyhow::Result<BTreeSet<&str>> {
    let mut names = BTreeSet::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ExportSection(reader) = payload? {
            for export in reader {
                names.insert(export?.name);
            }
        }
    }
    Ok(names)
}

fn kind(kind: ExternalKind) -> anyhow::Result<ExportKind> {
    Ok(match kind {
        ExternalKind::Func => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
        other => bail!("an export of kind {other:?} this tool does not know"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{CodeSection, Function, FunctionSection, Instruction, TypeSection};

    /// A module exporting an empty function under each of `names`.
    fn module(names: &[&str]) -> Vec<u8> {
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut functions = FunctionSection::new();
        let mut exports = ExportSection::new();
        let mut code = CodeSection::new();
        for (index, name) in names.iter().enumerate() {
            functions.function(0);
            exports.export(name, ExportKind::Func, index as u32);
            let mut body = Function::new([]);
            body.instruction(&Instruction::End);
            code.function(&body);
        }
        let mut module = wasm_encoder::Module::new();
        module
            .section(&types)
            .section(&functions)
            .section(&exports)
            .section(&code);
        module.finish()
    }

    #[test]
    fn only_callbacks_not_kept_are_removed_and_the_module_stays_valid() {
        let input = module(&[
            "malloc",
            "proxy_on_request_headers",
            "proxy_on_request_body",
            "proxy_on_log",
        ]);
        let kept = BTreeSet::from(["proxy_on_request_headers"]);
        let (pruned, removed) = prune(&input, &kept).unwrap();
        assert_eq!(removed, ["proxy_on_request_body", "proxy_on_log"]);
        wasmparser::Validator::new().validate_all(&pruned).unwrap();
        let left: Vec<&str> = exports_of(&pruned).unwrap().into_iter().collect();
        assert_eq!(left, ["malloc", "proxy_on_request_headers"]);
    }

    #[test]
    fn a_kept_callback_the_module_lacks_is_an_error() {
        let input = module(&["proxy_on_request_headers"]);
        let kept = BTreeSet::from(["proxy_on_reqest_headers"]);
        let err = prune(&input, &kept).unwrap_err().to_string();
        assert!(err.contains("proxy_on_reqest_headers"), "{err}");
    }
}
