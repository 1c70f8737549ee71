//! What confines a RUN command in `--security=sandbox` (the default): the
//! capability sets, the seccomp filter, and the `/proc` and `/sys` paths
//! that are masked or read-only. Modelled on Docker's defaults (moby's
//! `oci/caps/defaults.go`, `profiles/seccomp/default.json`,
//! `oci/defaults.go`) so a Dockerfile sees what `docker build` gives it.
//!
//! **Capabilities.** The command keeps Docker's default set
//! ([`DEFAULT_CAPS`]: CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW,
//! SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL,
//! AUDIT_WRITE; `CapEff 00000000a80425fb` for root): every other
//! capability is dropped from the bounding set, the effective and
//! permitted sets are the default set, the inheritable set is empty (as
//! Docker since 20.10.14, CVE-2022-24769) and the ambient set cleared. A
//! step running as another user loses effective and permitted capabilities
//! on `setresuid`, as under Docker. Applied in `userns` mode too, where the
//! capabilities only reach the namespace's own objects anyway.
//!
//! **Seccomp.** Docker's default profile is an allowlist of ~370 system
//! calls; kiln's is a denylist of the calls Docker's profile refuses to a
//! container without extra capabilities (mounting and the new mount API,
//! namespaces, kernel modules, kexec, bpf, perf_event_open, the keyring,
//! reboot, swap, file handles, userfaultfd, io_uring, clock setting,
//! quotas, accounting, the syslog, `personality` beyond Docker's values, …),
//! each answered with `EPERM`. Why a denylist: an allowlist refuses system
//! calls newer than the list with an error that libcs do not expect (the
//! faccessat2 and clone3 breakages of older Docker releases), while the calls
//! that matter for containment are few and stable. Two details keep it
//! closed: `clone` with any namespace flag is refused (as Docker) and
//! `clone3`, whose flags live in memory a filter cannot read, answers
//! `ENOSYS` so libcs fall back to `clone`; on x86_64 the x32 ABI (numbers
//! with bit 30 set, which a list of x86_64 numbers would miss) is refused
//! by a second filter, and calls of any other ABI (i386 `int 0x80`) kill
//! the process, as seccompiler's architecture check does. So 32-bit x86
//! programs cannot run in a sandboxed RUN (Docker allows them);
//! `--security=insecure` can. The filters are compiled with `seccompiler`
//! for the build's architecture (x86_64, aarch64) and installed in the
//! command's process after kiln's own mounts and the pivot into the new
//! root, just before the credentials change and `execve`.
//!
//! `no_new_privs` is *not* set, as in Docker and BuildKit's RUN (BuildKit
//! sets `oci.WithNewPrivileges`): with it `sudo` and other setuid programs
//! of the image stop working in RUN, and it would add nothing here — a
//! Dockerfile chooses its own `USER`, setuid programs cannot exceed the
//! bounding set, and the filter is installed with `CAP_SYS_ADMIN` (in the
//! step's namespace), which the kernel accepts in place of it.
//!
//! **Paths.** [`MASKED_PATHS`] are hidden (files by `/dev/null`, directories
//! by an empty read-only tmpfs) and [`READONLY_PATHS`] are made read-only,
//! as Docker does; paths the kernel does not have are skipped.
//!
//! `--security=insecure` (which needs the build's `security.insecure`
//! entitlement) skips all of this: every capability, no filter, nothing
//! masked, as BuildKit's insecure mode.

use std::collections::BTreeMap;

use rustix::thread::CapabilitySet;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::{Result, SandboxError};

/// Docker's default capability set (`00000000a80425fb`).
pub const DEFAULT_CAPS: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// Paths hidden from the step (Docker's `MaskedPaths`).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths the step sees read-only (Docker's `ReadonlyPaths`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn setup(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup(format!("{what}: {e}"))
}

/// Drops every capability outside [`DEFAULT_CAPS`] from the bounding set,
/// clears the ambient set, installs the seccomp filters and leaves the
/// effective and permitted sets at [`DEFAULT_CAPS`] (inheritable empty).
/// Called in the command's process, as the namespace's root, before the
/// credentials change and `execve`.
pub(crate) fn confine(filters: &[BpfProgram]) -> Result<()> {
    for cap in 0..64u32 {
        if DEFAULT_CAPS.bits() & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: past the kernel's last capability.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(setup(
                &format!("drop capability {cap} from the bounding set"),
                e,
            ));
        }
    }
    rustix::thread::clear_ambient_capability_set()
        .map_err(|e| setup("clear the ambient capabilities", e))?;
    // Before the capabilities go: without no_new_privs, installing a
    // filter takes CAP_SYS_ADMIN.
    for f in filters {
        install(f)?;
    }
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: DEFAULT_CAPS,
            permitted: DEFAULT_CAPS,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| setup("set the capabilities", e))
}

fn install(prog: &BpfProgram) -> Result<()> {
    let len = u16::try_from(prog.len())
        .map_err(|_| SandboxError::Setup("seccomp filter too long".into()))?;
    let fprog = libc::sock_fprog {
        len,
        // `seccompiler::sock_filter` is `#[repr(C)]` with the kernel's layout.
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `len` valid instructions that outlive the
    // call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(setup(
            "install the seccomp filter",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The architecture seccompiler compiles for.
#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// System calls refused with `EPERM` whatever their arguments.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn denied() -> Vec<libc::c_long> {
    #[allow(unused_mut)]
    let mut v = vec![
        // Mounts, old and new API, and the root.
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        // Namespaces (clone's flags are checked separately).
        libc::SYS_unshare,
        libc::SYS_setns,
        // The kernel itself.
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_syslog,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_vhangup,
        libc::SYS_lookup_dcookie,
        // The keyring is not namespaced.
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        // Opening files by handle bypasses the mount boundary.
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_fanotify_init,
        libc::SYS_kcmp,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS__sysctl,
        libc::SYS_uselib,
        libc::SYS_nfsservctl,
        libc::SYS_ustat,
        libc::SYS_sysfs,
    ]);
    #[cfg(target_arch = "aarch64")]
    v.push(libc::SYS_nfsservctl);
    v
}

/// `clone` flags that create namespaces (Docker refuses them without
/// CAP_SYS_ADMIN): NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// `personality` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and the query 0xffffffff.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn cond(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| setup("build the seccomp filter", e))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conds).map_err(|e| setup("build the seccomp filter", e))
}

/// The compiled filters (installed in order; the strictest answer wins).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn filters() -> Result<Vec<BpfProgram>> {
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in denied() {
        rules.insert(nr, Vec::new());
    }
    // clone with any namespace flag: one rule per flag (rules are ORed).
    let mut clone_rules = Vec::new();
    for f in NAMESPACE_FLAGS {
        clone_rules.push(rule(vec![cond(0, SeccompCmpOp::MaskedEq(f), f)?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // personality with anything but the allowed values (conditions are ANDed).
    let mut others = Vec::new();
    for p in PERSONALITIES {
        others.push(cond(0, SeccompCmpOp::Ne, p)?);
    }
    rules.insert(libc::SYS_personality, vec![rule(others)?]);
    let main = SeccompFilter::new(rules, SeccompAction::Allow, eperm, ARCH)
        .map_err(|e| setup("build the seccomp filter", e))?;

    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        ARCH,
    )
    .map_err(|e| setup("build the seccomp filter", e))?;

    let mut out = Vec::new();
    for f in [main, clone3] {
        out.push(BpfProgram::try_from(f).map_err(|e| setup("compile the seccomp filter", e))?);
    }
    #[cfg(target_arch = "x86_64")]
    out.push(x32_guard());
    Ok(out)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn filters() -> Result<Vec<BpfProgram>> {
    Err(SandboxError::Unavailable(
        "the sandbox's seccomp profile exists for x86_64 and aarch64 only".into(),
    ))
}

/// Refuses x32 system calls (x86_64 numbers with `__X32_SYSCALL_BIT`).
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.nr is at offset 0 (the arch was checked by the main filter).
        ins(LD_W_ABS, 0, 0, 0),
        ins(JGE_K, 0, 1, 0x4000_0000),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_are_dockers() {
        assert_eq!(DEFAULT_CAPS.bits(), 0xa804_25fb);
    }

    #[test]
    fn filters_compile() {
        let f = filters().unwrap();
        assert!(f.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }

    /// The errno of a raw system call just made (0 when it succeeded).
    fn errno_of(rc: libc::c_long) -> i32 {
        if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    /// Installs the filters in a forked child and checks what each call
    /// answers there; every call is chosen so that, unfiltered, the kernel
    /// answers something else (or succeeds harmlessly).
    #[test]
    fn filters_refuse_what_they_should_and_nothing_else() {
        let progs = filters().unwrap();
        // SAFETY: the child only makes raw system calls and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            for p in &progs {
                if install(p).is_err() {
                    unsafe { libc::_exit(100) };
                }
            }
            // SAFETY (all calls): raw system calls with null or scalar
            // arguments that the filter answers before the kernel reads them.
            let checks: Vec<(i32, i32)> = unsafe {
                vec![
                    // mount(NULL, NULL, ...): EFAULT unfiltered.
                    (
                        errno_of(libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0)),
                        libc::EPERM,
                    ),
                    (errno_of(libc::syscall(libc::SYS_unshare, 0)), libc::EPERM),
                    (
                        errno_of(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)),
                        libc::EPERM,
                    ),
                    (errno_of(libc::syscall(libc::SYS_bpf, 0, 0, 0)), libc::EPERM),
                    // CLONE_NEWUSER|CLONE_FS: EINVAL unfiltered.
                    (
                        errno_of(libc::syscall(
                            libc::SYS_clone,
                            (libc::CLONE_NEWUSER | libc::CLONE_FS) as libc::c_ulong,
                            0,
                            0,
                            0,
                            0,
                        )),
                        libc::EPERM,
                    ),
                    // clone3(NULL, 0): EINVAL unfiltered.
                    (
                        errno_of(libc::syscall(libc::SYS_clone3, 0, 0)),
                        libc::ENOSYS,
                    ),
                    // READ_IMPLIES_EXEC is not one of Docker's personalities.
                    (
                        errno_of(libc::syscall(libc::SYS_personality, 0x0040_0000)),
                        libc::EPERM,
                    ),
                    // The query is allowed.
                    (
                        errno_of(libc::syscall(libc::SYS_personality, 0xffff_ffffu32)),
                        0,
                    ),
                    (errno_of(libc::syscall(libc::SYS_getpid)), 0),
                ]
            };
            #[allow(unused_mut)]
            let mut checks = checks;
            #[cfg(target_arch = "x86_64")]
            {
                // x32 getpid: ENOSYS or a pid unfiltered, EPERM with the guard.
                let rc = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
                checks.push((errno_of(rc), libc::EPERM));
            }
            // Exit with 1 + the index of the first wrong answer, 0 if none.
            let first_wrong = checks
                .iter()
                .position(|(got, want)| got != want)
                .map_or(0, |i| i as i32 + 1);
            unsafe { libc::_exit(first_wrong) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "1 + the index of the check that answered wrongly"
        );
    }
}
