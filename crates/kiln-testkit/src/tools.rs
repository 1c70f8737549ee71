//! External tools the tests drive (skopeo, umoci, podman, openssl, the
//! distribution registry, busybox, ...): finding them on `PATH`, requiring
//! them, and running them. A test whose tool is missing FAILS with a
//! message naming the tool and `scripts/setup.sh`, which installs every
//! tool the tests use; nothing here skips a test.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The script that installs every tool the tests use.
pub const SETUP_SCRIPT: &str = "scripts/setup.sh";

/// Where `tool` is on `PATH`, if anywhere.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// The message of a test that failed for want of `tool`.
pub fn missing(tool: &str) -> String {
    format!(
        "{tool} is not installed: {SETUP_SCRIPT} installs it (the tests need it; they do not skip)"
    )
}

/// The path of `tool`; panics (fails the test) when it is not installed.
pub fn require(tool: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| panic!("{}", missing(tool)))
}

/// Panics (fails the test) unless every one of `tools` is installed.
pub fn require_all(tools: &[&str]) {
    for tool in tools {
        require(tool);
    }
}

/// The output of a command that could start; a command that could not
/// start fails the test naming the tool and the setup script.
pub fn output(cmd: &mut Command) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output()
        .unwrap_or_else(|e| panic!("{program} could not start ({e}); {}", missing(&program)))
}

/// Fails the test with the command's status, stdout and stderr unless it
/// succeeded.
pub fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "command failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `cmd`, asserting success; returns its stdout.
pub fn run_cmd(cmd: &mut Command) -> Vec<u8> {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `program args`, asserting success; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> Vec<u8> {
    run_cmd(Command::new(program).args(args))
}

/// [`run`], its stdout as text.
pub fn run_text(program: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&run(program, args)).into_owned()
}
