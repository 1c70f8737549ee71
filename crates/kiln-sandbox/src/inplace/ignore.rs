//! Which paths an in-place build never walks, reports or deletes
//! ([`IgnoreSet`]), and the `/proc/self/mountinfo` parser that finds the
//! container's mount points ([`parse_mountinfo`]).

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{IoContext, Result};

/// Paths every in-place build leaves alone, besides mounts and kiln's dir.
const ALWAYS_IGNORED: [&str; 3] = ["/proc", "/sys", "/dev"];

/// One line of `/proc/self/mountinfo` (the fields kiln uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfoEntry {
    /// Field 4: the path inside the mounted filesystem that is mounted here.
    pub fs_root: PathBuf,
    /// Field 5: where it is mounted, in this process's view.
    pub mount_point: PathBuf,
    /// The filesystem type (first field after ` - `).
    pub fs_type: String,
    /// The mount source (second field after ` - `).
    pub source: String,
}

/// Parses `/proc/self/mountinfo` text. Lines that do not have the expected
/// shape are skipped (the kernel never writes such lines; skipping keeps a
/// future format extension from failing a build). Octal escapes (`\040`
/// for a space, `\011`, `\012`, `\134`) are decoded.
///
/// Hand-written: the format is six lines of documentation in proc(5) and
/// the crates that parse it bring far more than this needs.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfoEntry> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut f = before.split(' ');
            let fs_root = f.nth(3)?;
            let mount_point = f.next()?;
            let mut a = after.split(' ');
            let fs_type = a.next()?;
            let source = a.next().unwrap_or_default();
            Some(MountInfoEntry {
                fs_root: PathBuf::from(OsString::from_vec(unescape(fs_root))),
                mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
                fs_type: String::from_utf8_lossy(&unescape(fs_type)).into_owned(),
                source: String::from_utf8_lossy(&unescape(source)).into_owned(),
            })
        })
        .collect()
}

/// Decodes the kernel's `\ooo` escapes; anything else passes through.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            if let Some(digits) = b.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let v = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(v) = u8::try_from(v) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Turns a path as seen inside the root (`/proc`, `etc/hosts`, `/a/../b`)
/// into a normalised path relative to the root. `..` stops at the root,
/// as it does for a process chrooted there. `None` for the root itself.
fn relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The paths an in-place build never walks, reports or deletes, with
/// everything below them. Paths are kept relative to the root the set was
/// built for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IgnoreSet {
    paths: HashSet<PathBuf>,
    ancestors: HashSet<PathBuf>,
}

impl IgnoreSet {
    /// `/proc`, `/sys`, `/dev`, `kiln_dir` and `extra` (`--ignore-path`),
    /// all as seen inside `root` (`/kiln` means `root/kiln`). No mounts:
    /// see [`IgnoreSet::with_mounts`] and [`IgnoreSet::from_current_mounts`].
    pub fn new(root: &Path, kiln_dir: &Path, extra: &[PathBuf]) -> Self {
        let _ = root; // Paths are relative to it; kept for a uniform signature.
        let mut set = IgnoreSet::default();
        for p in ALWAYS_IGNORED.iter().map(Path::new).chain([kiln_dir]) {
            set.insert(p);
        }
        for p in extra {
            set.insert(p);
        }
        set
    }

    /// [`IgnoreSet::new`] plus every mount point listed in `mountinfo` (the
    /// text of `/proc/self/mountinfo`) that lies strictly below `root`.
    /// Mount points are paths in this process's view, so they are made
    /// relative to `root` (canonicalised when it exists).
    pub fn with_mounts(root: &Path, kiln_dir: &Path, extra: &[PathBuf], mountinfo: &str) -> Self {
        let mut set = Self::new(root, kiln_dir, extra);
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        for m in parse_mountinfo(mountinfo) {
            if let Ok(rel) = m.mount_point.strip_prefix(&root) {
                set.insert(rel);
            }
        }
        set
    }

    /// [`IgnoreSet::with_mounts`] with this process's `/proc/self/mountinfo`.
    pub fn from_current_mounts(root: &Path, kiln_dir: &Path, extra: &[PathBuf]) -> Result<Self> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .ctx(|| "read /proc/self/mountinfo".into())?;
        Ok(Self::with_mounts(root, kiln_dir, extra, &text))
    }

    /// Adds one path as seen inside the root. The root itself is never
    /// added (ignoring it would ignore everything).
    pub fn insert(&mut self, path: &Path) {
        let Some(rel) = relative(path) else { return };
        let mut a = rel.parent();
        while let Some(p) = a.filter(|p| !p.as_os_str().is_empty()) {
            self.ancestors.insert(p.to_path_buf());
            a = p.parent();
        }
        self.paths.insert(rel);
    }

    /// Whether `rel` (relative to the root) is ignored, itself or through
    /// an ignored ancestor.
    pub fn is_ignored(&self, rel: &Path) -> bool {
        rel.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| self.paths.contains(a))
    }

    /// Whether `rel` itself is in the set (the walks check each entry as
    /// they descend, so this is all they need).
    pub(crate) fn contains(&self, rel: &Path) -> bool {
        self.paths.contains(rel)
    }

    /// Whether an entry of directory `rel` may be ignored (the root, or a
    /// directory above an ignored path).
    pub(crate) fn may_hold_ignored(&self, rel: &Path) -> bool {
        rel.as_os_str().is_empty() || self.ancestors.contains(rel)
    }

    /// Whether an ignored path lies strictly below `rel`.
    pub fn has_ignored_below(&self, rel: &Path) -> bool {
        self.ancestors.contains(rel)
    }

    /// The ignored paths, as absolute paths inside the root, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.paths.iter().map(|p| Path::new("/").join(p)).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
24 22 0:23 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
30 22 253:1 /var/lib/kubelet/pods/x/etc-hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
31 22 253:1 /var/lib/kubelet/pods/x/volumes/kubernetes.io~projected/kube-api-access /var/run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw
32 22 0:40 / /data/my\\040dir rw shared:5 master:1 - tmpfs tmp\\134fs rw
33 22 0:41 / /odd\\012name rw - tmpfs tmpfs rw
bad line without separator
";

    #[test]
    fn parses_fields_and_octal_escapes() {
        let m = parse_mountinfo(SAMPLE);
        let points: Vec<&Path> = m.iter().map(|e| e.mount_point.as_path()).collect();
        assert_eq!(
            points,
            [
                Path::new("/"),
                Path::new("/proc"),
                Path::new("/dev"),
                Path::new("/etc/hosts"),
                Path::new("/var/run/secrets/kubernetes.io/serviceaccount"),
                Path::new("/data/my dir"),
                Path::new("/odd\nname"),
            ]
        );
        assert_eq!(m[0].fs_type, "overlay");
        assert_eq!(m[3].fs_root, Path::new("/var/lib/kubelet/pods/x/etc-hosts"));
        assert_eq!(m[3].source, "/dev/vda1");
        // Optional fields (shared:5 master:1) do not shift the mount point.
        assert_eq!(m[5].source, "tmp\\fs");
    }

    #[test]
    fn unescape_leaves_non_octal_backslashes() {
        assert_eq!(unescape("a\\040b"), b"a b");
        assert_eq!(unescape("a\\9b"), b"a\\9b");
        assert_eq!(unescape("end\\04"), b"end\\04");
        assert_eq!(unescape("\\777"), b"\\777"); // Over 255: not an escape.
    }

    #[test]
    fn set_from_mounts_relative_to_root() {
        let set = IgnoreSet::with_mounts(
            Path::new("/"),
            Path::new("/kiln"),
            &[PathBuf::from("/cache/../var/cache/apt/")],
            SAMPLE,
        );
        assert_eq!(
            set.paths(),
            [
                "/data/my dir",
                "/dev",
                "/etc/hosts",
                "/kiln",
                "/odd\nname",
                "/proc",
                "/sys",
                "/var/cache/apt",
                "/var/run/secrets/kubernetes.io/serviceaccount",
            ]
            .map(PathBuf::from)
        );
        assert!(set.is_ignored(Path::new("etc/hosts")));
        assert!(!set.is_ignored(Path::new("etc/hostname")));
        assert!(!set.is_ignored(Path::new("etc")));
        assert!(set.is_ignored(Path::new("proc/1/status")));
        assert!(set.has_ignored_below(Path::new("var/run")));
        assert!(set.has_ignored_below(Path::new("etc")));
        assert!(!set.has_ignored_below(Path::new("usr")));

        // A root below `/`: only mounts inside it count, made relative.
        let text = "40 1 0:50 / /no-such-kiln-root/run/secrets ro - tmpfs tmpfs ro\n\
                    41 1 0:51 / /no-such-kiln-root rw - ext4 /dev/vdb rw\n\
                    42 1 0:52 / /elsewhere rw - tmpfs tmpfs rw\n";
        let sub = IgnoreSet::with_mounts(
            Path::new("/no-such-kiln-root"),
            Path::new("/kiln"),
            &[],
            text,
        );
        assert_eq!(
            sub.paths(),
            ["/dev", "/kiln", "/proc", "/run/secrets", "/sys"].map(PathBuf::from)
        );
        assert!(!sub.is_ignored(Path::new("")));
    }
}
