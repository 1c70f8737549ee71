//! kiln against buildah: every case of `tests/fixtures/buildah-corpus/`
//! (one directory per case: a Dockerfile and its context files, plus the
//! shared `_base/` passwd and group) is built by kiln (default isolation)
//! and by buildah (vfs storage, chroot isolation, both under the test's
//! temp dir), both images are unpacked with umoci, and the trees must hold
//! the same entries (type, mode with setuid/setgid/sticky, owner, content,
//! link target, hardlink grouping) and the configs the same Env, Cmd,
//! Entrypoint, User, WorkingDir, Labels, ExposedPorts, Volumes and
//! StopSignal.
//!
//! Differences that are buildah's own and not Docker/BuildKit semantics
//! are listed in [`ALLOWED`], one commented entry per difference, matched
//! exactly (path, side, type, mode, owner) and required to occur, so the
//! list cannot go stale silently. No case is skipped.
//!
//! Every corpus Dockerfile starts `FROM scratch` with the static busybox
//! (copied in by the test, not kept in the fixtures) installed as /bin.
//! Real components only: buildah, umoci and skopeo (scripts/setup.sh
//! installs them); the test runs as root, as buildah's chroot isolation and
//! umoci's owner-preserving unpack need.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

/// The corpus, next to this file.
fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buildah-corpus")
}

/// The shared context files every case gets (not a case itself).
const BASE_DIR: &str = "_base";

/// An entry for a failure message, its mode in octal.
fn describe(e: Option<&Entry>) -> String {
    match e {
        None => "absent".to_string(),
        Some(e) => format!(
            "{} mode {:04o} owner {}:{} size {} content {:?} link {:?} hardlink group {:?}",
            e.kind, e.mode, e.uid, e.gid, e.size, e.content, e.link_target, e.hardlink_group
        ),
    }
}

/// What an allowlisted difference expects on one side.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// No entry at that path.
    Absent,
    /// A directory with this mode and owner.
    Dir { mode: u32, uid: u32, gid: u32 },
    /// An empty regular file with this mode and owner.
    EmptyFile { mode: u32, uid: u32, gid: u32 },
}

impl Want {
    fn matches(self, e: Option<&Entry>) -> bool {
        match (self, e) {
            (Want::Absent, None) => true,
            (Want::Dir { mode, uid, gid }, Some(e)) => {
                e.kind == "dir" && e.mode == mode && e.uid == uid && e.gid == gid
            }
            (Want::EmptyFile { mode, uid, gid }, Some(e)) => {
                e.kind == "file" && e.size == 0 && e.mode == mode && e.uid == uid && e.gid == gid
            }
            _ => false,
        }
    }
}

/// One known, explained difference between kiln's tree and buildah's.
struct Allowed {
    /// The case it occurs in; `None`: every case (each has a RUN).
    case: Option<&'static str>,
    path: &'static str,
    kiln: Want,
    buildah: Want,
}

const ROOT_DIR: Want = Want::Dir {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// Builder-specific differences, each required to occur where listed.
const ALLOWED: &[Allowed] = &[
    // buildah creates the mount points of its RUN containers (/dev, /proc,
    // /sys, /run) in the rootfs and commits them as empty directories;
    // BuildKit mounts them without leaving anything in the layer.
    Allowed {
        case: None,
        path: "dev",
        kiln: Want::Absent,
        buildah: ROOT_DIR,
    },
    Allowed {
        case: None,
        path: "proc",
        kiln: Want::Absent,
        buildah: ROOT_DIR,
    },
    Allowed {
        case: None,
        path: "sys",
        kiln: Want::Absent,
        buildah: ROOT_DIR,
    },
    Allowed {
        case: None,
        path: "run",
        kiln: Want::Absent,
        buildah: ROOT_DIR,
    },
    // buildah bind-mounts its generated /etc/hosts, /etc/hostname and
    // /etc/resolv.conf over empty placeholder files (mode 0755) that stay
    // in the committed layer; BuildKit leaves no placeholder when the base
    // image has none.
    Allowed {
        case: None,
        path: "etc/hosts",
        kiln: Want::Absent,
        buildah: Want::EmptyFile {
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    },
    Allowed {
        case: None,
        path: "etc/hostname",
        kiln: Want::Absent,
        buildah: Want::EmptyFile {
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    },
    Allowed {
        case: None,
        path: "etc/resolv.conf",
        kiln: Want::Absent,
        buildah: Want::EmptyFile {
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    },
    // RUN --mount targets that did not exist: buildah 1.28 removes the
    // target itself but leaves the parent directories it created for it
    // (/mnt for /mnt/ctx, /var and /var/cache for /var/cache/kc); BuildKit
    // removes every mount stub it created, so nothing remains.
    Allowed {
        case: Some("mounts"),
        path: "mnt",
        kiln: Want::Absent,
        buildah: ROOT_DIR,
    },
    Allowed {
        case: Some("mounts"),
        path: "var",
        kiln: Want::Absent,
        buildah: ROOT_DIR,
    },
    Allowed {
        case: Some("mounts"),
        path: "var/cache",
        kiln: Want::Absent,
        buildah: ROOT_DIR,
    },
    // `COPY --chmod=0750 tree /c/tree/`: BuildKit applies --chmod to the
    // copied directory itself as well as to everything in it (since the
    // fix of moby/buildkit#4945); buildah 1.28 creates the destination
    // directory 0755 and applies the mode below it only.
    Allowed {
        case: Some("copy-chown"),
        path: "c/tree",
        kiln: Want::Dir {
            mode: 0o750,
            uid: 1000,
            gid: 1000,
        },
        buildah: Want::Dir {
            mode: 0o755,
            uid: 1000,
            gid: 1000,
        },
    },
    // A WORKDIR no later RUN uses: BuildKit creates it at the WORKDIR
    // instruction (owned by the current USER); buildah 1.28 creates a
    // working directory only when a RUN needs it.
    Allowed {
        case: Some("config"),
        path: "app",
        kiln: ROOT_DIR,
        buildah: Want::Absent,
    },
    Allowed {
        case: Some("workdir"),
        path: "home/app/wd/svc-wd",
        kiln: Want::Dir {
            mode: 0o755,
            uid: 2000,
            gid: 3000,
        },
        buildah: Want::Absent,
    },
    Allowed {
        case: Some("workdir"),
        path: "home/app/wd/svc-wd/deeper",
        kiln: Want::Dir {
            mode: 0o755,
            uid: 2000,
            gid: 3000,
        },
        buildah: Want::Absent,
    },
];

/// The label buildah stamps on every image it commits; not part of the
/// Dockerfile's config.
const BUILDAH_LABEL: &str = "io.buildah.version";

/// The parts of an image config both builders must agree on.
fn config_summary(cfg: &serde_json::Value, drop_label: Option<&str>) -> serde_json::Value {
    let c = &cfg["config"];
    let mut labels = c["Labels"].clone();
    if let (Some(map), Some(key)) = (labels.as_object_mut(), drop_label) {
        map.remove(key);
        if map.is_empty() {
            labels = serde_json::Value::Null;
        }
    }
    serde_json::json!({
        "Env": c["Env"],
        "Cmd": c["Cmd"],
        "Entrypoint": c["Entrypoint"],
        "User": c["User"],
        "WorkingDir": c["WorkingDir"],
        "Labels": labels,
        "ExposedPorts": c["ExposedPorts"],
        "Volumes": c["Volumes"],
        "StopSignal": c["StopSignal"],
    })
}

/// Copies a fixture directory into the build context, keeping modes.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let e = e.expect("dir entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy fixture");
        }
    }
}

/// Runs buildah on this sandbox's storage; its cache mounts go to the
/// sandbox too (buildah keeps them under $TMPDIR).
fn buildah(sb: &Sandbox, args: &[&str]) {
    let root = sb.path("buildah-root");
    let runroot = sb.path("buildah-runroot");
    let tmp = sb.path("buildah-tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let mut full = vec![
        "--root".to_string(),
        root.to_string_lossy().to_string(),
        "--runroot".to_string(),
        runroot.to_string_lossy().to_string(),
        "--storage-driver".to_string(),
        "vfs".to_string(),
    ];
    full.extend(args.iter().map(|a| a.to_string()));
    let out = Command::new("buildah")
        .args(&full)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap_or_else(|e| panic!("buildah could not start: {e} (scripts/setup.sh installs it)"));
    assert_success(&out);
}

/// Builds `case` with both builders and returns every difference, each
/// line naming the case.
fn compare_case(case: &str) -> Vec<String> {
    let sb = Sandbox::new();
    let ctx = sb.context();
    copy_tree(&corpus().join(case), &ctx);
    copy_tree(&corpus().join(BASE_DIR), &ctx);
    sb.busybox();
    let ctx_s = ctx.to_string_lossy().to_string();

    let started = Instant::now();
    let kiln_layout = sb.path("kiln-oci");
    let dest = format!("type=oci,dest={}", kiln_layout.display());
    let out = sb.kiln(&["build", "--output", &dest, "-t", "case:latest", &ctx_s]);
    assert_success(&out);
    let kiln_time = started.elapsed();

    let started = Instant::now();
    let buildah_layout = sb.path("buildah-oci");
    buildah(
        &sb,
        &[
            "bud",
            "--isolation",
            "chroot",
            "--layers",
            "-t",
            "case",
            &ctx_s,
        ],
    );
    let buildah_dest = format!("oci:{}:latest", buildah_layout.display());
    buildah(&sb, &["push", "case", &buildah_dest]);
    let buildah_time = started.elapsed();
    eprintln!("{case}: kiln {kiln_time:?}, buildah {buildah_time:?}");

    let a = entries(&umoci_unpack(
        &kiln_layout,
        "latest",
        &sb.path("kiln-bundle"),
    ));
    let b = entries(&umoci_unpack(
        &buildah_layout,
        "latest",
        &sb.path("buildah-bundle"),
    ));

    let allowed: Vec<&Allowed> = ALLOWED
        .iter()
        .filter(|al| al.case.is_none_or(|c| c == case))
        .collect();
    let mut used = BTreeSet::new();
    let mut diffs = Vec::new();
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for path in paths {
        let (ka, kb) = (a.get(path), b.get(path));
        if ka == kb {
            continue;
        }
        match allowed.iter().find(|al| al.path == path.as_str()) {
            Some(al) if al.kiln.matches(ka) && al.buildah.matches(kb) => {
                used.insert(al.path);
            }
            _ => diffs.push(format!(
                "{case}: {path}:\n  kiln    {}\n  buildah {}",
                describe(ka),
                describe(kb)
            )),
        }
    }
    for al in &allowed {
        if !used.contains(al.path) {
            diffs.push(format!(
                "{case}: allowlisted difference at {} (kiln {:?}, buildah {:?}) no longer occurs: kiln {}, buildah {}",
                al.path,
                al.kiln,
                al.buildah,
                describe(a.get(al.path)),
                describe(b.get(al.path))
            ));
        }
    }

    let kiln_cfg = skopeo_config(&format!("oci:{}:latest", kiln_layout.display()));
    let buildah_cfg = skopeo_config(&buildah_dest);
    let (kc, bc) = (
        config_summary(&kiln_cfg, None),
        config_summary(&buildah_cfg, Some(BUILDAH_LABEL)),
    );
    if kc != bc {
        diffs.push(format!(
            "{case}: configs differ:\n  kiln    {kc}\n  buildah {bc}"
        ));
    }
    if buildah_cfg["config"]["Labels"][BUILDAH_LABEL].is_null() {
        diffs.push(format!(
            "{case}: buildah's image lacks its {BUILDAH_LABEL} label, so dropping it hides nothing"
        ));
    }
    diffs
}

fn check(case: &str) {
    let diffs = compare_case(case);
    assert!(
        diffs.is_empty(),
        "kiln and buildah differ in case {case}:\n{}",
        diffs.join("\n")
    );
}

/// One test per corpus directory.
macro_rules! corpus_cases {
    ($($test:ident => $dir:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check($dir);
            }
        )*
        /// Every case a test above builds.
        const CASES: &[&str] = &[$($dir),*];
    };
}

corpus_cases! {
    run_creates_files => "run-files",
    deleting_base_files_writes_whiteouts => "whiteouts",
    directory_replaced_by_file_and_back => "dir-file-swap",
    recreated_directory_is_opaque => "opaque-dir",
    symlinks_absolute_relative_dangling => "symlinks",
    hardlinks_within_and_across_layers => "hardlinks",
    setuid_setgid_and_sticky_modes => "special-modes",
    two_thousand_files => "many-files",
    user_switches_by_name_and_id => "user-switch",
    workdir_creation_and_ownership => "workdir",
    run_mounts_leave_nothing => "mounts",
    copy_chown_and_chmod => "copy-chown",
    config_instructions => "config",
}

/// No corpus directory is left without a test, and no test names a
/// directory that is not there.
#[test]
fn every_corpus_case_has_a_test() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(corpus())
        .expect("corpus dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .to_string()
        })
        .filter(|n| n != BASE_DIR)
        .collect();
    let tested: BTreeSet<String> = CASES.iter().map(|c| c.to_string()).collect();
    assert_eq!(on_disk, tested);
    for case in CASES {
        let df = std::fs::read_to_string(corpus().join(case).join("Dockerfile"))
            .unwrap_or_else(|e| panic!("{case}/Dockerfile: {e}"));
        assert!(
            df.starts_with("FROM scratch\nCOPY busybox /bin/busybox\n"),
            "{case}/Dockerfile must start from the busybox base"
        );
    }
}
