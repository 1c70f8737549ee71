//! Whether kiln is running inside a container ([`container_evidence`]).
//!
//! In-place mode overwrites the root filesystem it runs in, so it must only
//! ever run where that root is a disposable container's.

use std::path::Path;

use super::ignore::parse_mountinfo;

/// A file kiln's own image carries: its presence says "this root is a
/// kiln container, in-place builds may overwrite it".
pub const IN_PLACE_MARKER: &str = "/kiln/.in-place-container";

/// cgroup path fragments container runtimes and Kubernetes use.
const CGROUP_HINTS: [&str; 6] = ["kubepods", "docker", "containerd", "libpod", "crio", "lxc"];

/// Why kiln believes it runs inside a container, as a sentence for the
/// build log, or `None` when nothing says so. Looks at (in this order):
/// kiln's own marker [`IN_PLACE_MARKER`],
/// `/run/.containerenv`, the `container` environment variable,
/// `KUBERNETES_SERVICE_HOST`, container runtime names in `/proc/1/cgroup`,
/// and an overlay root filesystem in `/proc/self/mountinfo`.
pub fn container_evidence() -> Option<String> {
    let cgroup = std::fs::read_to_string("/proc/1/cgroup").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    evidence_in(
        Path::new("/"),
        &|k| std::env::var(k).ok(),
        &cgroup,
        &mountinfo,
    )
}

/// [`container_evidence`] with every input given (pure but for the file
/// existence checks below `root`).
pub(crate) fn evidence_in(
    root: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    cgroup: &str,
    mountinfo: &str,
) -> Option<String> {
    // `/.dockerenv` is deliberately not evidence: Docker leaves it in
    // images it exports, so machines and VMs made from such an image carry
    // it on their real root, where an in-place build would wipe the host.
    // A plain Docker container has the cgroup or overlay-root hints below.
    for (file, what) in [
        (IN_PLACE_MARKER, "kiln's in-place marker"),
        ("/run/.containerenv", "Podman's marker"),
    ] {
        let rel = file.trim_start_matches('/');
        if root.join(rel).symlink_metadata().is_ok() {
            return Some(format!("{what} {file} exists"));
        }
    }
    if let Some(v) = env("container").filter(|v| !v.is_empty()) {
        return Some(format!("the environment variable container={v} is set"));
    }
    if env("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty()) {
        return Some("KUBERNETES_SERVICE_HOST is set (a Kubernetes pod)".into());
    }
    for line in cgroup.lines() {
        if let Some(hint) = CGROUP_HINTS.iter().find(|h| line.contains(*h)) {
            return Some(format!("/proc/1/cgroup names {hint} ({})", line.trim()));
        }
    }
    let mounts = parse_mountinfo(mountinfo);
    if let Some(root_mount) = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new("/"))
    {
        if root_mount.fs_type == "overlay" {
            return Some("the root filesystem is an overlay mount".into());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn nothing_says_container() {
        let root = tempfile::tempdir().unwrap();
        let mountinfo = "22 1 253:1 / / rw - ext4 /dev/vda1 rw\n";
        let cgroup = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(evidence_in(root.path(), &no_env, cgroup, mountinfo), None);
    }

    #[test]
    fn each_hint_is_named() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let overlay = "22 1 0:21 / / rw - overlay overlay rw,lowerdir=/a\n";
        assert_eq!(
            evidence_in(r, &no_env, "", overlay).as_deref(),
            Some("the root filesystem is an overlay mount")
        );
        let cg = "12:pids:/kubepods/besteffort/pod1/abc\n";
        assert_eq!(
            evidence_in(r, &no_env, cg, "").as_deref(),
            Some("/proc/1/cgroup names kubepods (12:pids:/kubepods/besteffort/pod1/abc)")
        );
        let k8s = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.0.0.1".to_string());
        assert_eq!(
            evidence_in(r, &k8s, "", "").as_deref(),
            Some("KUBERNETES_SERVICE_HOST is set (a Kubernetes pod)")
        );
        let podman = |k: &str| (k == "container").then(|| "podman".to_string());
        assert_eq!(
            evidence_in(r, &podman, cg, "").as_deref(),
            Some("the environment variable container=podman is set")
        );
        std::fs::create_dir_all(r.join("run")).unwrap();
        std::fs::write(r.join("run/.containerenv"), "").unwrap();
        assert_eq!(
            evidence_in(r, &podman, cg, overlay).as_deref(),
            Some("Podman's marker /run/.containerenv exists")
        );
        let bare = tempfile::tempdir().unwrap();
        std::fs::write(bare.path().join(".dockerenv"), "").unwrap();
        assert_eq!(
            evidence_in(bare.path(), &no_env, "", "").as_deref(),
            None,
            "a stale /.dockerenv alone proves nothing"
        );
        std::fs::create_dir_all(r.join("kiln")).unwrap();
        std::fs::write(r.join("kiln/.in-place-container"), "").unwrap();
        assert_eq!(
            evidence_in(r, &no_env, "", "").as_deref(),
            Some("kiln's in-place marker /kiln/.in-place-container exists")
        );
    }
}
