//! The `weir` binary, run as a user runs it.

use std::process::Command;

fn weir(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("run weir")
}

#[test]
fn check_filter_config_accepts_valid_and_reports_invalid_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&good, r#"{"version": "v7"}"#).unwrap();
    std::fs::write(&bad, "{\n  \"version\": \"v7\",\n  \"colour\": 1\n}").unwrap();

    let ok = weir(&["check-filter-config".as_ref(), good.as_os_str()]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok (version \"v7\")"));

    let failed = weir(&[
        "check-filter-config".as_ref(),
        good.as_os_str(),
        bad.as_os_str(),
    ]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", bad.display())),
        "error names file and line: {stderr}"
    );
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");
}

#[test]
fn missing_file_is_an_error_not_a_crash() {
    let out = weir(&[
        "check-filter-config".as_ref(),
        "/nonexistent/weir.json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
