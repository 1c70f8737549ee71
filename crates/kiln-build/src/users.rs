//! User and group lookup in a stage's root filesystem (`/etc/passwd`,
//! `/etc/group`), for `COPY --chown` and `USER`.
//!
//! Rules (as Docker's builder applies them to `--chown`): a numeric user
//! alone gets the same number as its group; a user name alone gets its
//! primary group from `/etc/passwd`; a group, when given, is a number or a
//! name from `/etc/group`. Unlike Docker's builder, which silently falls back
//! to root for an unknown name, kiln reports it.

use std::path::{Path, PathBuf};

use crate::copy::fsops::{resolve_in_root, Escape};

/// Errors of user/group resolution.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user/group specification '{0}'")]
    InvalidSpec(String),
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser { name: String },
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup { name: String },
    #[error("unable to find user {name}: the image has no /etc/passwd")]
    NoPasswd { name: String },
    #[error("unable to find group {name}: the image has no /etc/group")]
    NoGroup { name: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A user as `USER` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Other groups listing the user as a member (primary group excluded).
    pub supplementary: Vec<u32>,
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves a `--chown` value (`user[:group]`, names or numbers) against
/// `rootfs`'s `/etc/passwd` and `/etc/group`.
pub fn resolve_chown(rootfs: &Path, spec: &str) -> Result<(u32, u32), UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(UserError::InvalidSpec(spec.to_string()));
    }
    let (uid, primary_gid) =
        match user.parse::<u32>() {
            Ok(uid) => (uid, uid),
            Err(_) => {
                let users = read_passwd(rootfs)?.ok_or_else(|| UserError::NoPasswd {
                    name: user.to_string(),
                })?;
                let e = users.iter().find(|e| e.name == user).ok_or_else(|| {
                    UserError::UnknownUser {
                        name: user.to_string(),
                    }
                })?;
                (e.uid, e.gid)
            }
        };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_group(rootfs, g)?,
        },
    };
    Ok((uid, gid))
}

/// Looks a group name up in `rootfs`'s `/etc/group`.
pub fn lookup_group(rootfs: &Path, name: &str) -> Result<u32, UserError> {
    let groups = read_group(rootfs)?.ok_or_else(|| UserError::NoGroup {
        name: name.to_string(),
    })?;
    groups
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.gid)
        .ok_or_else(|| UserError::UnknownGroup {
            name: name.to_string(),
        })
}

/// The owner of the directories `WORKDIR` creates for `USER spec`, as
/// Docker's builder derives it: a numeric user is `uid:uid` (its passwd
/// entry is not consulted), a user name takes uid and primary gid from
/// `/etc/passwd`, and a `:group` (number, or name from `/etc/group`)
/// replaces the gid. Names that cannot be resolved leave root's id in
/// place instead of failing, as Docker's builder does for `WORKDIR`.
pub fn workdir_owner(rootfs: &Path, spec: &str) -> (u32, u32) {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => read_passwd(rootfs)
            .ok()
            .flatten()
            .and_then(|us| us.into_iter().find(|e| e.name == user))
            .map_or((0, 0), |e| (e.uid, e.gid)),
    };
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        match g.parse::<u32>() {
            Ok(n) => gid = n,
            Err(_) => {
                if let Ok(n) = lookup_group(rootfs, g) {
                    gid = n;
                }
            }
        }
    }
    (uid, gid)
}

/// Looks up a user for `USER`: a name or numeric uid, optionally
/// `:group` (name or number, replacing the primary group). A numeric uid
/// that has no passwd entry is valid, with gid 0 and home `/` (what the
/// runtime gives a step; `HOME` comes from [`UserInfo::home`] when the
/// step's environment lacks it).
pub fn lookup_user(rootfs: &Path, spec: &str) -> Result<UserInfo, UserError> {
    let (name_or_uid, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let mut info = lookup_user_only(rootfs, name_or_uid)?;
    if let Some(g) = group {
        info.gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) if !g.is_empty() => lookup_group(rootfs, g)?,
            Err(_) => return Err(UserError::InvalidSpec(spec.to_string())),
        };
    }
    Ok(info)
}

fn lookup_user_only(rootfs: &Path, name_or_uid: &str) -> Result<UserInfo, UserError> {
    if name_or_uid.is_empty() {
        return Err(UserError::InvalidSpec(name_or_uid.to_string()));
    }
    let users = read_passwd(rootfs)?;
    let numeric = name_or_uid.parse::<u32>().ok();
    let entry = users.as_ref().and_then(|us| {
        us.iter()
            .find(|e| match numeric {
                Some(uid) => e.uid == uid,
                None => e.name == name_or_uid,
            })
            .cloned()
    });
    let entry = match (entry, numeric) {
        // The home directory is the one of the first passwd entry with the
        // resolved uid (the runtime looks users up by number), so two names
        // sharing a uid share the first one's home.
        (Some(e), _) => {
            let home = users
                .as_ref()
                .and_then(|us| us.iter().find(|u| u.uid == e.uid))
                .map_or_else(|| e.home.clone(), |u| u.home.clone());
            PasswdEntry { home, ..e }
        }
        (None, Some(uid)) => PasswdEntry {
            name: String::new(),
            uid,
            gid: 0,
            home: "/".to_string(),
        },
        (None, None) if users.is_none() => {
            return Err(UserError::NoPasswd {
                name: name_or_uid.to_string(),
            })
        }
        (None, None) => {
            return Err(UserError::UnknownUser {
                name: name_or_uid.to_string(),
            })
        }
    };
    let mut supplementary = Vec::new();
    if !entry.name.is_empty() {
        for g in read_group(rootfs)?.unwrap_or_default() {
            if g.gid != entry.gid
                && g.members.contains(&entry.name)
                && !supplementary.contains(&g.gid)
            {
                supplementary.push(g.gid);
            }
        }
    }
    Ok(UserInfo {
        uid: entry.uid,
        gid: entry.gid,
        home: entry.home,
        supplementary,
    })
}

/// Reads a file of the image, symlinks resolved inside the rootfs; `None`
/// when it does not exist.
fn read_image_file(rootfs: &Path, path: &str) -> Result<Option<String>, UserError> {
    let host = match resolve_in_root(rootfs, path, true, Escape::Clamp) {
        Ok(r) => r.host(rootfs),
        Err(_) => return Ok(None),
    };
    match std::fs::read(&host) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
        {
            Ok(None)
        }
        Err(source) => Err(UserError::Io { path: host, source }),
    }
}

fn read_passwd(rootfs: &Path) -> Result<Option<Vec<PasswdEntry>>, UserError> {
    Ok(read_image_file(rootfs, "/etc/passwd")?.map(|text| parse_passwd(&text)))
}

fn read_group(rootfs: &Path) -> Result<Option<Vec<GroupEntry>>, UserError> {
    Ok(read_image_file(rootfs, "/etc/group")?.map(|text| parse_group(&text)))
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// `name:password:gid:member,member`; malformed lines are skipped.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\ndev:x:1001:1002::/home/dev:/bin/bash\nweb:x:33:33::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\ndevs:x:1002:\nstaff:x:50:dev,web\ndocker:x:999:web, dev\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn chown_forms() {
        let r = rootfs();
        let p = r.path();
        assert_eq!(resolve_chown(p, "1000:1000").unwrap(), (1000, 1000));
        assert_eq!(resolve_chown(p, "1000").unwrap(), (1000, 1000));
        assert_eq!(resolve_chown(p, "dev").unwrap(), (1001, 1002));
        assert_eq!(resolve_chown(p, "dev:staff").unwrap(), (1001, 50));
        assert_eq!(resolve_chown(p, "dev:7").unwrap(), (1001, 7));
        assert_eq!(resolve_chown(p, "5:staff").unwrap(), (5, 50));
    }

    #[test]
    fn chown_errors() {
        let r = rootfs();
        let p = r.path();
        let e = resolve_chown(p, "nobody").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        let e = resolve_chown(p, "dev:nogroup").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(matches!(
            resolve_chown(p, ":5"),
            Err(UserError::InvalidSpec(_))
        ));
        assert!(matches!(
            resolve_chown(p, "5:"),
            Err(UserError::InvalidSpec(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        let e = resolve_chown(empty.path(), "dev").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user dev: the image has no /etc/passwd"
        );
        assert_eq!(resolve_chown(empty.path(), "12:34").unwrap(), (12, 34));
        assert!(matches!(
            resolve_chown(empty.path(), "12:grp"),
            Err(UserError::NoGroup { .. })
        ));
    }

    #[test]
    fn passwd_through_absolute_symlink_stays_in_rootfs() {
        let r = rootfs();
        std::fs::rename(
            r.path().join("etc/passwd"),
            r.path().join("etc/passwd.real"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd.real", r.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_chown(r.path(), "web").unwrap(), (33, 33));
    }

    #[test]
    fn lookup_user_info() {
        let r = rootfs();
        let u = lookup_user(r.path(), "dev").unwrap();
        assert_eq!(
            u,
            UserInfo {
                uid: 1001,
                gid: 1002,
                home: "/home/dev".into(),
                supplementary: vec![50, 999]
            }
        );
        let u = lookup_user(r.path(), "33").unwrap();
        assert_eq!(u.home, "/var/www");
        assert_eq!(u.supplementary, vec![50, 999]);
        let u = lookup_user(r.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(lookup_user(r.path(), "dev:staff").unwrap().gid, 50);
        assert_eq!(lookup_user(r.path(), "4242:7").unwrap().gid, 7);
        assert!(matches!(
            lookup_user(r.path(), "ghost"),
            Err(UserError::UnknownUser { .. })
        ));
    }

    #[test]
    fn home_is_the_first_entry_with_the_uid() {
        let r = rootfs();
        std::fs::write(
            r.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ntoor:x:0:0::/toor:/bin/sh\nbob:x:1111:1002::/home/john:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(lookup_user(r.path(), "toor").unwrap().home, "/root");
        assert_eq!(lookup_user(r.path(), "0").unwrap().home, "/root");
        assert_eq!(lookup_user(r.path(), "bob").unwrap().home, "/home/john");
        assert_eq!(lookup_user(r.path(), "1111:7").unwrap().home, "/home/john");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(lookup_user(empty.path(), "0").unwrap().home, "/");
    }

    #[test]
    fn workdir_owner_forms() {
        let r = rootfs();
        let p = r.path();
        // A number is uid and gid, whatever passwd says (dev is 1001:1002).
        assert_eq!(workdir_owner(p, "1001"), (1001, 1001));
        assert_eq!(workdir_owner(p, "dev"), (1001, 1002));
        assert_eq!(workdir_owner(p, "dev:staff"), (1001, 50));
        assert_eq!(workdir_owner(p, "9999:7"), (9999, 7));
        assert_eq!(workdir_owner(p, "ghost"), (0, 0));
        assert_eq!(workdir_owner(p, "ghost:staff"), (0, 50));
        assert_eq!(workdir_owner(p, "dev:nogroup"), (1001, 1002));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(workdir_owner(empty.path(), "9999"), (9999, 9999));
        assert_eq!(workdir_owner(empty.path(), "root"), (0, 0));
    }
}
