//! `kiln executor` with the Kaniko flags and environment variables that
//! either work through kiln's own machinery (`--registry-map`,
//! `KANIKO_REGISTRY_MAP`, `KANIKO_NO_PUSH`, `-v`) or are refused by name;
//! none is accepted without effect.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Pushes a one-file base image to `reg` as `team/base:v1`.
fn push_base(sb: &Sandbox, reg: &Registry) {
    sb.busybox();
    sb.dockerfile("FROM scratch\nCOPY busybox /bin/busybox\n");
    let ctx = sb.context().to_string_lossy().to_string();
    let out = sb.kiln(&[
        "executor",
        "--context",
        &ctx,
        "-d",
        &format!("{}/team/base:v1", reg.host),
    ]);
    assert_success(&out);
}

#[test]
fn registry_map_pulls_docker_hub_names_from_the_mapped_registry() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    push_base(&sb, &reg);
    // No internet: the build succeeds only if the mapping is used. Kaniko
    // writes Docker Hub as index.docker.io; several mappings are tried in
    // order, the unreachable one first.
    sb.dockerfile("FROM docker.io/team/base:v1\nRUN [\"/bin/busybox\", \"true\"]\n");
    let ctx = sb.context().to_string_lossy().to_string();
    let map = format!("index.docker.io=127.0.0.1:1;docker.io={}", reg.host);
    let out = sb.kiln(&[
        "executor",
        "--context",
        &ctx,
        "--no-push",
        "--isolation=userns",
        &format!("--registry-map={map}"),
    ]);
    assert_success(&out);
    // Kaniko's default verbosity (info) shows the failed first mapping.
    assert!(stderr(&out).contains("mirror failed"), "{}", stderr(&out));
    // The same through Kaniko's environment variable, in a fresh cache.
    let child = Sandbox::new();
    child.dockerfile("FROM docker.io/team/base:v1\n");
    let ctx = child.context().to_string_lossy().to_string();
    // -v error keeps the failed first mapping quiet.
    let out = child.kiln_env(
        &["executor", "--context", &ctx, "--no-push", "-v", "error"],
        &[(
            "KANIKO_REGISTRY_MAP",
            &format!("index.docker.io={}", reg.host),
        )],
    );
    assert_success(&out);
    // Without a mapping the pull goes to Docker Hub and fails offline.
    let out = child.kiln(&["executor", "--context", &ctx, "--no-push"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn kaniko_no_push_env_overrides_the_destination() {
    let sb = Sandbox::new();
    sb.dockerfile("FROM scratch\n");
    let ctx = sb.context().to_string_lossy().to_string();
    // The destination is unreachable: only KANIKO_NO_PUSH lets this pass.
    let args = ["executor", "--context", &ctx, "-d", "127.0.0.1:1/x/y:z"];
    let out = sb.kiln_env(&args, &[("KANIKO_NO_PUSH", "true")]);
    assert_success(&out);
    let out = sb.kiln_env(&args, &[("KANIKO_NO_PUSH", "false")]);
    assert_eq!(out.status.code(), Some(1));
    let out = sb.kiln_env(&args, &[("KANIKO_NO_PUSH", "sure")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("KANIKO_NO_PUSH=sure: expected true or false"),
        "{}",
        stderr(&out)
    );
}

/// Extra flags, environment, and the message the build must fail with.
type Refused<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn unsupported_kaniko_flags_and_env_vars_fail_by_name() {
    let sb = Sandbox::new();
    sb.dockerfile("FROM scratch\n");
    let ctx = sb.context().to_string_lossy().to_string();
    let base = ["executor", "--context", &ctx, "--no-push"];
    let cases: [Refused; 7] = [
        (
            &["-b", "bkt"],
            &[],
            "--bucket bkt: kiln reads bucket contexts directly",
        ),
        (
            &["--push-ignore-immutable-tag-errors"],
            &[],
            "--push-ignore-immutable-tag-errors: not supported yet",
        ),
        (
            &[
                "--skip-default-registry-fallback",
                "--registry-mirror=m.example",
            ],
            &[],
            "--skip-default-registry-fallback: not supported yet",
        ),
        (&["--cache-repo=oci:/tmp/c"], &[], "--cache-repo oci:/tmp/c"),
        (
            &["--registry-map=docker.io=m.example/prefix"],
            &[],
            "repository prefix",
        ),
        (&[], &[("STACKLOG_PATH", "/tmp/s")], "STACKLOG_PATH:"),
        (&[], &[("BENCHMARK_FILE", "/tmp/b")], "BENCHMARK_FILE:"),
    ];
    for (flags, env, message) in cases {
        let mut argv = base.to_vec();
        argv.extend_from_slice(flags);
        let out = sb.kiln_env(&argv, env);
        assert_eq!(out.status.code(), Some(1), "{flags:?} {env:?}");
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
    }
    let out = sb.kiln_env(
        &[
            "executor",
            "--context",
            "git://127.0.0.1:1/r.git",
            "--no-push",
        ],
        &[("GIT_TOKEN", "s3cr3t")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("GIT_TOKEN: not supported yet"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cr3t"));
}

#[test]
fn cleanup_says_what_it_does_and_verbosity_is_checked() {
    let sb = Sandbox::new();
    sb.dockerfile("FROM scratch\n");
    let ctx = sb.context().to_string_lossy().to_string();
    let out = sb.kiln(&[
        "executor",
        "--context",
        &ctx,
        "--no-push",
        "-v",
        "trace",
        "--cleanup",
    ]);
    assert_success(&out);
    assert!(
        stderr(&out).contains("--cleanup: nothing to clean"),
        "{}",
        stderr(&out)
    );
    let out = sb.kiln(&["executor", "--context", &ctx, "--no-push", "-v", "loud"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--verbosity loud"),
        "{}",
        stderr(&out)
    );
}
