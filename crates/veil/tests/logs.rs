//! The binary's log lines, written to a pipe (or a file), carry no ANSI colour codes.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["demo", "--model", "digits-mlp", "--limit", "2"])
        .current_dir(&repository)
        .env("RUST_LOG", "info")
        .output()
        .expect("the veil binary runs");
    assert!(output.status.success(), "{output:?}");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("server registered"),
        "nothing was logged: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
}
