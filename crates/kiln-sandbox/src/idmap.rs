//! User-namespace id maps: choosing them (`/etc/subuid`, `/etc/subgid`,
//! newuidmap/newgidmap or a single-id map), installing them for the init
//! process, and translating on-disk (host) ids back to container ids.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, SandboxError};

/// The id the kernel shows for ids that have no mapping (`overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

/// One contiguous range: container ids `inside..inside+count` are host ids
/// `outside..outside+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The uid and gid maps of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    /// Whether `setgroups(2)` is allowed inside (false for a single-id map
    /// written without newgidmap).
    pub setgroups: bool,
}

impl IdMap {
    /// No user namespace: ids on disk are container ids.
    pub fn identity() -> Self {
        let all = vec![IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }];
        IdMap {
            uids: all.clone(),
            gids: all,
            setgroups: true,
        }
    }

    /// Host uid → container uid ([`OVERFLOW_ID`] when unmapped).
    pub fn uid_to_container(&self, host: u32) -> u32 {
        to_inside(&self.uids, host)
    }

    /// Host gid → container gid ([`OVERFLOW_ID`] when unmapped).
    pub fn gid_to_container(&self, host: u32) -> u32 {
        to_inside(&self.gids, host)
    }

    /// Whether a container uid has a host id in this map.
    pub fn maps_uid(&self, inside: u32) -> bool {
        self.uids
            .iter()
            .any(|r| contains(r.inside, r.count, inside))
    }

    /// Whether a container gid has a host id in this map.
    pub fn maps_gid(&self, inside: u32) -> bool {
        self.gids
            .iter()
            .any(|r| contains(r.inside, r.count, inside))
    }
}

fn contains(start: u32, count: u32, id: u32) -> bool {
    id >= start && u64::from(id) < u64::from(start) + u64::from(count)
}

fn to_inside(ranges: &[IdRange], host: u32) -> u32 {
    ranges
        .iter()
        .find(|r| contains(r.outside, r.count, host))
        .map(|r| r.inside + (host - r.outside))
        .unwrap_or(OVERFLOW_ID)
}

/// How the map will be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MapPlan {
    /// Write `/proc/PID/{uid,gid}_map` directly (we are root, or a single-id
    /// map of our own ids).
    Direct(IdMap),
    /// Use the setuid helpers with the caller's subordinate ranges.
    Helpers {
        map: IdMap,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
}

impl MapPlan {
    pub(crate) fn map(&self) -> &IdMap {
        match self {
            MapPlan::Direct(m) | MapPlan::Helpers { map: m, .. } => m,
        }
    }
}

/// Chooses the map for the calling user: root maps every id to itself;
/// others get `0 → caller` plus `1.. → their /etc/subuid range` when the ranges
/// and newuidmap/newgidmap exist, else the single id `0 → caller`.
pub(crate) fn plan_for_caller() -> MapPlan {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    if uid == 0 {
        return MapPlan::Direct(IdMap::identity());
    }
    let single = |id: u32| {
        vec![IdRange {
            inside: 0,
            outside: id,
            count: 1,
        }]
    };
    let name = user_name(uid);
    let subuid = std::fs::read_to_string("/etc/subuid")
        .ok()
        .and_then(|t| sub_range(&t, name.as_deref(), uid));
    let subgid = std::fs::read_to_string("/etc/subgid")
        .ok()
        .and_then(|t| sub_range(&t, name.as_deref(), uid));
    let helpers = (find_in_path("newuidmap"), find_in_path("newgidmap"));
    if let (Some((us, uc)), Some((gs, gc)), (Some(newuidmap), Some(newgidmap))) =
        (subuid, subgid, helpers)
    {
        let with_range = |id: u32, start: u32, count: u32| {
            let mut v = single(id);
            v.push(IdRange {
                inside: 1,
                outside: start,
                count,
            });
            v
        };
        return MapPlan::Helpers {
            map: IdMap {
                uids: with_range(uid, us, uc),
                gids: with_range(gid, gs, gc),
                setgroups: true,
            },
            newuidmap,
            newgidmap,
        };
    }
    MapPlan::Direct(IdMap {
        uids: single(uid),
        gids: single(gid),
        setgroups: false,
    })
}

/// Installs the plan's maps for process `pid` (which has just unshared its
/// user namespace).
pub(crate) fn install(plan: &MapPlan, pid: u32) -> Result<()> {
    match plan {
        MapPlan::Direct(map) => {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            if !map.setgroups {
                write_proc(&proc.join("setgroups"), "deny")?;
            }
            write_proc(&proc.join("uid_map"), &map_text(&map.uids))?;
            write_proc(&proc.join("gid_map"), &map_text(&map.gids))?;
            Ok(())
        }
        MapPlan::Helpers {
            map,
            newuidmap,
            newgidmap,
        } => {
            run_helper(newuidmap, pid, &map.uids)?;
            run_helper(newgidmap, pid, &map.gids)
        }
    }
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

fn write_proc(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).ctx(|| format!("write {:?} to {}", text.trim(), path.display()))
}

fn run_helper(helper: &Path, pid: u32, ranges: &[IdRange]) -> Result<()> {
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let out = cmd.output().ctx(|| format!("run {}", helper.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SandboxError::Setup(format!(
            "{} failed ({}): {}",
            helper.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The user name for `uid` from /etc/passwd (subuid files may use either).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// The first `name:start:count` (or `uid:start:count`) line for this user.
pub(crate) fn sub_range(text: &str, name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    let uid_s = uid.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if Some(who) != name && who != uid_s {
            return None;
        }
        let start: u32 = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_range_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:0:0\n";
        assert_eq!(sub_range(text, Some("alice"), 1000), Some((100000, 65536)));
        assert_eq!(sub_range(text, Some("carol"), 1001), Some((200000, 1000)));
        assert_eq!(sub_range(text, Some("bob"), 1002), None);
        assert_eq!(sub_range(text, None, 5), None);
    }

    #[test]
    fn host_to_container_ids() {
        let m = IdMap {
            uids: vec![
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1,
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65536,
                },
            ],
            gids: vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            setgroups: false,
        };
        assert_eq!(m.uid_to_container(1000), 0);
        assert_eq!(m.uid_to_container(100000), 1);
        assert_eq!(m.uid_to_container(100032), 33);
        assert_eq!(m.uid_to_container(0), OVERFLOW_ID);
        assert_eq!(m.gid_to_container(100000), OVERFLOW_ID);
        assert!(m.maps_uid(65536) && !m.maps_uid(65537));
        assert!(m.maps_gid(0) && !m.maps_gid(1));
        assert_eq!(IdMap::identity().uid_to_container(4242), 4242);
    }
}
