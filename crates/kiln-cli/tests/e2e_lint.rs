//! End-to-end: `kiln build` prints BuildKit's lint warnings on stderr,
//! for the stages it builds, and never a value.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn secrets_used_in_arg_or_env_is_warned_without_values() {
    let sb = Sandbox::new();
    sb.write("f", "x\n");
    sb.dockerfile(
        "FROM scratch AS unused\n\
         ENV UNUSED_SECRET=never-built\n\
         FROM scratch\n\
         ARG API_TOKEN\n\
         ENV DB_PASSWORD=hunter2-env-value PUBLIC_KEY=pk\n\
         ARG SSH_KEY_FILE=/run/k\n\
         COPY f /f\n",
    );
    let dest = format!("type=oci,dest={}", sb.path("out").display());
    let ctx = sb.context().to_string_lossy().into_owned();
    let out = sb.kiln(&[
        "build",
        "--progress",
        "quiet",
        "--build-arg",
        "API_TOKEN=hunter2-arg-value",
        "--output",
        &dest,
        &ctx,
    ]);
    assert_success(&out);
    let err = stderr(&out);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("SecretsUsedInArgOrEnv"))
        .collect();
    assert_eq!(
        warnings,
        [
            "warning: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG \"API_TOKEN\") (line 4)",
            "warning: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\") (line 5)",
        ],
        "stderr:\n{err}"
    );
    assert!(
        !err.contains("hunter2") && !stdout(&out).contains("hunter2"),
        "a value was printed:\n{err}"
    );
}
