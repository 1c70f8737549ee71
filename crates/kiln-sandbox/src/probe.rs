//! Choosing an isolation mode. `auto` picks `root` when kiln runs as real
//! root with `CAP_SYS_ADMIN` ([`real_root`]); otherwise it tries a user
//! namespace (the probe runs in the init process and does what a real step
//! needs: a user namespace with a self-mapped id, a private mount
//! namespace, an overlayfs mount with `userxattr`, a PID namespace with a
//! fresh /proc), then root without `CAP_SYS_ADMIN` in the effective set.
//!
//! Why real root prefers `root`: inside a user namespace, ids outside the
//! mapped ranges collapse to the overflow id, and file capabilities set by
//! a step (`setcap`) are namespaced (version 3 `security.capability` bound
//! to the namespace's root uid), so a later step or the image's user would
//! not see them as written. Without a user namespace, ownership and
//! `security.capability` reach the layer exactly as the step left them,
//! which is also how builders running as root under Docker behave.
//!
//! And `root` is a real boundary, the one `docker build` (BuildKit on
//! rootful runc) draws: Docker's default capabilities, a seccomp filter,
//! masked `/proc` paths, and no usable device node outside kiln's `/dev`
//! (see the `confine` and `mounts` modules). A user namespace would be
//! stronger only with subordinate ids (root in the step mapped to an
//! unprivileged host uid); as root, kiln's `userns` maps every id to
//! itself (the stage roots hold image ownership as is), so it would add no
//! uid separation. Mapping root's `/etc/subuid` range would mean shifting
//! the ownership of every unpacked file into that range and back for each
//! layer (Docker's `userns-remap`), at a cost per file and with the
//! file-capability loss above; `--isolation userns` stays available.

use std::fs;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// Whether the process is real root able to mount: effective uid 0 and
/// `CAP_SYS_ADMIN` in the effective capability set (real root inside a
/// container started without it cannot mount overlayfs or sysfs).
pub(crate) fn real_root() -> bool {
    rustix::process::geteuid().is_root()
        && rustix::thread::capabilities(None).is_ok_and(|c| {
            c.effective
                .contains(rustix::thread::CapabilitySet::SYS_ADMIN)
        })
}

/// The step of the user-namespace probe that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub(crate) struct ProbeFailure {
    step: String,
    #[source]
    source: std::io::Error,
}

/// A [`ProbeFailure`] at `step`.
fn failed<E: Into<std::io::Error>>(step: impl Into<String>) -> impl FnOnce(E) -> ProbeFailure {
    let step = step.into();
    move |e| ProbeFailure {
        step,
        source: e.into(),
    }
}

/// Runs in the init process (mode `probe`); `Err` says which step failed.
pub(crate) fn userns_probe() -> Result<(), ProbeFailure> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let tmp = tempfile::Builder::new()
        .prefix("kiln-probe-")
        .tempdir()
        .map_err(failed("create a temp dir"))?;
    let dir = tmp.path();
    for d in ["lower", "upper", "work", "merged", "proc"] {
        fs::create_dir(dir.join(d)).map_err(failed(format!("create {d}")))?;
    }
    unshare(CloneFlags::CLONE_NEWUSER).map_err(failed("unshare(CLONE_NEWUSER)"))?;
    fs::write("/proc/self/setgroups", "deny").map_err(failed("deny setgroups"))?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(failed("write uid_map"))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(failed("write gid_map"))?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)
        .map_err(failed("unshare(CLONE_NEWNS|CLONE_NEWPID)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(failed("make / private"))?;
    let merged = dir.join("merged");
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(failed("mount overlayfs with userxattr"))?;
    let _ = umount2(&merged, MntFlags::MNT_DETACH);
    let proc_dir = dir.join("proc");
    // SAFETY: the init process is single-threaded (see the init module docs).
    match unsafe { fork() }.map_err(failed("fork"))? {
        ForkResult::Child => {
            let ok = mount(
                Some("proc"),
                &proc_dir,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            );
            std::process::exit(if ok.is_ok() { 0 } else { 1 });
        }
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => {}
            _ => {
                return Err(ProbeFailure {
                    step: "mount /proc in a new PID namespace".into(),
                    source: std::io::Error::other("not permitted"),
                })
            }
        },
    }
    let _ = umount2(Path::new(&proc_dir), MntFlags::MNT_DETACH);
    // `work/work` is created with mode 000; allow the temp dir to be removed.
    let _ = fs::set_permissions(
        dir.join("work/work"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `real_root` agrees with the kernel's own account in /proc.
    #[test]
    fn real_root_matches_proc_status() {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_string()
        };
        let cap_eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
        let euid: u32 = field("Uid:")
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let expected = euid == 0 && cap_eff & (1 << 21) != 0;
        assert_eq!(real_root(), expected);
    }
}
