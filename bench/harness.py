#!/usr/bin/env python3
"""kiln benchmark harness: builds workloads with kiln and buildah side by side.

Run through bench/run.sh (see bench/README.md). Python 3 standard library only.

For every workload and round, each builder (order alternating per round) does a
cold build (kiln: a fresh --cache-dir; buildah: a wiped private storage root),
then a warm build (the same command again, nothing changed), then an edit build
(one context file named by the workload's `edit` file changed, restored after;
see ContextEdit). Every build pushes to the registry. Per build we record wall
time, the peak memory of the whole process tree (sampled; see TreeMeter) and the
pushed image's size; for kiln also the steps that ran, from its plain progress
log, and the overhead (wall time minus the time of the RUN/COPY/ADD steps that ran).
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# BuildKit v0.32.2 time divided by buildah 1.28.2 time (cold, warm), medians measured
# side by side on the reference machine (2 vCPU Debian 12 VM, 2026-11-22) over the
# same kinds of workloads; kiln's target is a lower kiln/buildah ratio on every row.
BUILDKIT_RATIO = {
    "copy-many-small": (0.32, 0.13),
    "copy-big": (0.50, 0.05),
    "multistage-c": (0.53, 0.27),
    "run-heavy-fs": (0.65, 1.00),
    "apt-python": (0.87, 0.23),
    "noop-rebuild": (0.58, 0.14),
    "seed-weather-mcp": (0.60, 0.10),
    "seed-weather-agent": (0.61, 0.03),
    "seed-travel-agent": (0.56, 0.03),
}
BUILDAH_PEAK_MB_REF = 87  # buildah's median peak on the reference machine
# Issue requirement: a rebuild after one source change costs the re-run steps' time plus
# under this much (kiln's overhead in the edit mode).
EDIT_OVERHEAD_TARGET_S = 0.3
PROJECT_WORKLOADS = ["copy-many-small", "copy-big", "multistage-c", "run-heavy-fs",
                     "apt-python", "noop-rebuild"]
SEEDS = {  # name: (Dockerfile, context) relative to <shared>/seed-weather/agents
    "seed-weather-mcp": ("weather/mcp-servers/weather-mcp-server/Dockerfile.local",
                         "weather/mcp-servers/weather-mcp-server"),
    "seed-weather-agent": ("weather/Dockerfile.local", "weather"),
    "seed-travel-agent": ("travel/Dockerfile.local", "travel"),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- memory meter

class TreeMeter:
    """Peak memory of a command's whole process tree.

    The command is started inside a fresh cgroup (v2, or the v1 memory
    hierarchy), so every descendant - RUN steps, sandbox inits, helpers that
    re-parent themselves - stays countable. A thread samples every `interval`
    seconds the sum of Rss (and Pss) over all processes of the cgroup, read
    from /proc/PID/smaps_rollup. The cgroup's own peak counter is recorded too,
    but it also counts page cache written by the build, so it is not the
    headline. Without a usable cgroup, descendants of the root process are
    found by walking /proc (re-parented orphans are then missed).
    """

    def __init__(self, interval=0.05, timeout=1800):
        self.interval, self.timeout = interval, timeout
        self.base, self.peak_file = self._detect()
        self.seq = 0

    @staticmethod
    def _detect():
        tag = f"kiln-bench-probe-{os.getpid()}"
        for base, peak in (("/sys/fs/cgroup", "memory.peak"),
                           ("/sys/fs/cgroup/memory", "memory.max_usage_in_bytes")):
            if base == "/sys/fs/cgroup" and not os.path.exists(f"{base}/cgroup.controllers"):
                continue
            probe = Path(base) / tag
            try:
                probe.mkdir()
                ok = (probe / "cgroup.procs").exists()
                probe.rmdir()
                if ok:
                    return Path(base), peak
            except OSError:
                continue
        return None, None

    def describe(self):
        if self.base is None:
            return "/proc tree walk (no writable cgroup)"
        return f"cgroup {self.base} ({self.peak_file}) + smaps_rollup sampling every {self.interval}s"

    @staticmethod
    def _mem(pid):
        rss = pss = 0
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1])
            return rss, pss
        except OSError:
            pass
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
            return rss, rss
        except OSError:
            return 0, 0

    @staticmethod
    def _descendants(root):
        children = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
        out, todo = [], [root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def run(self, cmd, env, cwd, logf):
        """Runs cmd; returns dict(rc, wall_s, peak_rss_mb, peak_pss_mb, max_proc_rss_mb, cgroup_peak_mb)."""
        cg = None
        if self.base is not None:
            self.seq += 1
            cg = self.base / f"kiln-bench-{os.getpid()}-{self.seq}"
            cg.mkdir()
        procs_file = str(cg / "cgroup.procs") if cg else None

        def enter_cgroup():
            if procs_file:
                with open(procs_file, "w") as f:
                    f.write(str(os.getpid()))

        peak = {"rss": 0, "pss": 0, "proc": 0}
        stop = threading.Event()
        # Dirty pages of the previous build (either builder's) are written
        # out first, untimed: otherwise whoever runs second pays for the
        # other's writeback on a slow disk. The page cache itself stays.
        os.sync()
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, preexec_fn=enter_cgroup,
                             start_new_session=True)

        def copy_output():  # every line of the build's output, stamped with seconds since start
            for line in p.stdout:
                logf.write(f"[{time.monotonic() - t0:8.2f}s] ".encode() + line)
            logf.write(f"[{time.monotonic() - t0:8.2f}s] (output closed)\n".encode())

        reader = threading.Thread(target=copy_output, daemon=True)
        reader.start()

        def sample():
            while not stop.is_set():
                if procs_file:
                    try:
                        with open(procs_file) as f:
                            pids = [int(x) for x in f.read().split()]
                    except OSError:
                        pids = []
                else:
                    pids = self._descendants(p.pid)
                rs = ps = mx = 0
                for pid in pids:
                    r, s = self._mem(pid)
                    rs += r
                    ps += s
                    mx = max(mx, r)
                peak["rss"] = max(peak["rss"], rs)
                peak["pss"] = max(peak["pss"], ps)
                peak["proc"] = max(peak["proc"], mx)
                stop.wait(self.interval)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            rc = p.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # our own build: kill its process group and anything left in its cgroup
            os.killpg(p.pid, signal.SIGKILL)
            if procs_file:
                with open(procs_file) as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except OSError:
                            pass
            p.wait()
            logf.write(f"\nerror: killed by the bench harness after {self.timeout}s\n".encode())
            rc = -9
        wall = time.monotonic() - t0
        stop.set()
        reader.join(timeout=10)
        th.join()
        cg_peak = None
        if cg:
            try:
                cg_peak = int((cg / self.peak_file).read_text().split()[0]) / 2**20
            except (OSError, ValueError, IndexError):
                pass
            # Work a builder leaves running after it exits (kiln deletes its
            # scratch space from a detached process) is waited for, so it
            # never slows the next build; its time is recorded apart, not in
            # the builder's wall time (which is what a user waits for).
            t_exit = time.monotonic()
            for _ in range(3000):
                try:
                    cg.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                log(f"warning: processes left in {cg}: {(cg / 'cgroup.procs').read_text().split()}")
            after_exit = time.monotonic() - t_exit
            if after_exit > 1:
                log(f"background work after exit: {after_exit:.1f}s (waited for; not in wall time)")
        else:
            after_exit = 0.0
        return {"rc": rc, "wall_s": round(wall, 3), "after_exit_s": round(after_exit, 3),
                "peak_rss_mb": round(peak["rss"] / 1024, 1),
                "peak_pss_mb": round(peak["pss"] / 1024, 1),
                "max_proc_rss_mb": round(peak["proc"] / 1024, 1),
                "cgroup_peak_mb": round(cg_peak, 1) if cg_peak is not None else None}


# ---------------------------------------------------------------- registry

def skopeo_raw(ref):
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "skopeo failed")
    return json.loads(out.stdout)


def image_size(ref):
    """(sum of compressed layer sizes in MB, layer count) of a pushed image."""
    m = skopeo_raw(ref)
    if "manifests" in m:  # an index: take this machine's platform
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        pick = [d for d in m["manifests"]
                if d.get("platform", {}).get("architecture") == arch] or m["manifests"]
        repo = ref.rsplit(":", 1)[0] if "@" not in ref else ref.split("@")[0]
        m = skopeo_raw(f"{repo}@{pick[0]['digest']}")
    layers = m.get("layers", [])
    return round(sum(l.get("size", 0) for l in layers) / 1e6, 2), len(layers)


def has_image(ref):
    try:
        skopeo_raw(ref)
        return True
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(work):
    d = work / "registry"
    d.mkdir(parents=True, exist_ok=True)
    reg = f"127.0.0.1:{free_port()}"
    cfg = d / "config.yml"
    cfg.write_text("version: 0.1\nlog: {level: warn}\n"
                   f"storage: {{filesystem: {{rootdirectory: {d}/data}}, delete: {{enabled: true}}}}\n"
                   f"http: {{addr: {reg}}}\n")
    logf = open(d / "registry.log", "ab")
    p = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=logf, stderr=logf,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    for _ in range(100):
        if has_image_catalog(reg):
            log(f"registry started on {reg} (pid {p.pid}, data {d}/data)")
            return reg, p
        time.sleep(0.1)
    p.terminate()
    raise SystemExit(f"docker-registry did not come up on {reg}; see {d}/registry.log")


def has_image_catalog(reg):
    try:
        with socket.create_connection(tuple(reg.rsplit(":", 1)), timeout=1) as s:
            s.sendall(f"GET /v2/ HTTP/1.0\r\nHost: {reg}\r\n\r\n".encode())
            return s.recv(32).startswith(b"HTTP/1.")
    except OSError:
        return False


# ---------------------------------------------------------------- workloads

class Workload:
    def __init__(self, name, dockerfile, ctx, gen=None, rounds=None, build_args=(), shared=False,
                 edit=None):
        self.name, self.dockerfile, self.ctx, self.gen = name, Path(dockerfile), Path(ctx), gen
        self.rounds, self.build_args, self.shared = rounds, list(build_args), shared
        self.edit = ContextEdit(self.ctx, edit) if edit else None  # None: no edit mode

    def prepare(self):
        """Generates the context once; regenerated only when gen.sh changes."""
        if self.edit:
            self.edit.recover()
        if not self.gen:
            return
        stamp = self.ctx.parent / f"{self.ctx.name}.stamp"
        digest = hashlib.sha256(Path(self.gen).read_bytes()).hexdigest()
        if self.ctx.is_dir() and stamp.exists() and stamp.read_text() == digest:
            return
        log(f"generating context {self.ctx}")
        subprocess.run([str(self.gen), str(self.ctx)], check=True, stdout=subprocess.DEVNULL)
        stamp.write_text(digest)


class ContextEdit:
    """The edit mode's change to one context file, and its exact undoing.

    `apply(token)` saves the file (bytes, mode, atime/mtime: shutil.copy2) beside
    the context, then appends one line holding `token`, as a comment in the
    file's language, rewriting it in place (no rename: the directory is left
    as it was). `restore()` copies the saved bytes and times back, so later
    rounds see the generated context again. A backup left by an interrupted run
    is restored by `recover()` before the context is used.
    """

    COMMENT = {".c": "/* {} */", ".h": "/* {} */", ".py": "# {}", ".sh": "# {}"}

    def __init__(self, ctx, rel):
        self.rel = rel
        self.path = Path(ctx) / rel
        self.backup = Path(ctx).parent / f"{Path(ctx).name}.edit-orig"

    def apply(self, token):
        if not self.path.is_file():
            raise RuntimeError(f"edit file {self.path} does not exist")
        shutil.copy2(self.path, self.backup)
        line = self.COMMENT.get(self.path.suffix, "{}").format(f"kiln bench edit {token}")
        with open(self.path, "ab") as f:
            f.write(f"\n{line}\n".encode())

    def restore(self):
        if self.backup.exists():
            shutil.copy2(self.backup, self.path)
            self.backup.unlink()

    def recover(self):
        if self.backup.exists() and self.path.parent.is_dir():
            log(f"restoring {self.path} from an interrupted edit")
            self.restore()


def workload_edit(d):
    """The context-relative path named by d/edit (first line not starting with #), or None."""
    try:
        lines = (d / "edit").read_text().splitlines()
    except OSError:
        return None
    paths = [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]
    return paths[0] if paths else None


def project_workloads(names, work, reg):
    out = []
    for n in names:
        d = BENCH / "workloads" / n
        out.append(Workload(n, d / "Dockerfile", work / "ctx" / n, d / "gen.sh",
                            rounds=1 if n == "copy-big" else None,
                            build_args=[f"REGISTRY={reg}"], edit=workload_edit(d)))
    return out


def shared_workloads(shared, names, work, seeds, seed_names=None):
    out = []
    for n in names:
        d = shared / n
        if not (d / "Dockerfile").exists():
            log(f"shared workload {n} not found in {shared}, skipped")
            continue
        out.append(Workload(f"shared/{n}", d / "Dockerfile", work / "ctx" / f"shared-{n}",
                            d / "gen.sh", rounds=1 if n == "copy-big" else None, shared=True))
    if seeds:
        agents = shared / "seed-weather" / "agents"
        for n, (df, ctx) in SEEDS.items():
            if seed_names and n not in seed_names:
                continue
            need = ["127.0.0.1:5000/library/python:3.13-slim", "127.0.0.1:5000/astral-sh/uv:latest"]
            lacking = [b for b in need if not has_image(b)]
            if lacking:
                log(f"seed image {n} skipped: the registry lacks {lacking} "
                    f"(make them with {shared}/base-images/build-base-images.sh)")
            elif (agents / df).exists():
                out.append(Workload(f"shared/{n}", agents / df, agents / ctx, shared=True))
            else:
                log(f"seed image {n} not found under {agents}, skipped")
    return out


# ---------------------------------------------------------------- builders

def first_lines(path, n=6, tail=False):
    try:
        lines = [l for l in Path(path).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    if tail:
        errs = [l for l in lines if "error" in l.lower()]
        lines = errs[:n] if errs else lines[-n:]
    return "\n".join(lines[:n])


STEP_START = re.compile(r"#(\d+) \[([^\]]*)\] (\S+)")
STEP_END = re.compile(r"#(\d+) (DONE|CACHED|ERROR) ([0-9.]+)s\s*$")
# The steps kiln caches (it prints CACHED for them on a hit), hence the ones a source
# change can make re-run; FROM and metadata steps (ENV, LABEL, ...) run every time.
LAYER_STEPS = {"RUN", "COPY", "ADD", "WORKDIR"}


def kiln_steps(text):
    """Steps from kiln's `--progress plain` log: [(id, "[stage i/n] INSTR", status, seconds)].

    A step starts with `#N [stage i/n] INSTRUCTION ...` and ends with `#N DONE 1.23s`,
    `#N CACHED 0.00s` or `#N ERROR ...s`. kiln writes a step's layer while the next step
    runs and logs `#N layer sha256:...` when it is done: a step's time runs to that line
    when it comes later (measured with the harness's `[  12.34s] ` stamps).
    """
    names, out, started, layer_at = {}, [], {}, {}
    for line in text.splitlines():
        stamp = None
        if line.startswith("[") and "s] " in line:
            head, line = line.split("s] ", 1)
            try:
                stamp = float(head.strip("[ "))
            except ValueError:
                stamp = None
        m = STEP_END.match(line)
        if m:
            sid = int(m.group(1))
            out.append([sid, names.get(sid, "?"), m.group(2), float(m.group(3))])
            continue
        m = STEP_START.match(line)
        if m:
            sid = int(m.group(1))
            names[sid] = f"[{m.group(2)}] {m.group(3).upper()}"
            if stamp is not None:
                started[sid] = stamp
            continue
        m = re.match(r"#(\d+) layer sha256:", line)
        if m and stamp is not None:
            layer_at[int(m.group(1))] = stamp
    for s in out:
        sid = s[0]
        if sid in started and sid in layer_at:
            s[3] = max(s[3], round(layer_at[sid] - started[sid], 3))
    return [tuple(s) for s in out]


def step_figures(steps, wall):
    """steps_ran: cacheable steps (LAYER_STEPS) that ran, i.e. ended DONE, not CACHED;
    steps_ran_s: their summed seconds; overhead_s = wall - steps_ran_s (start-up, FROM
    resolution, metadata steps, context hashing, cache lookups, final commit, push).
    steps_done_s sums every DONE step (FROM and metadata too)."""
    ran = [s for s in steps if s[2] == "DONE" and s[1].rsplit(" ", 1)[-1] in LAYER_STEPS]
    ran_s = sum(s[3] for s in ran)
    return {"steps_total": len(steps), "steps_cached": sum(1 for s in steps if s[2] == "CACHED"),
            "steps_done_s": round(sum(s[3] for s in steps if s[2] == "DONE"), 3),
            "steps_ran": len(ran), "steps_ran_s": round(ran_s, 3),
            "steps_ran_list": [f"{s[1]} {s[3]:.2f}s" for s in ran],
            "overhead_s": round(wall - ran_s, 3)}


class Kiln:
    name = "kiln"

    def __init__(self, binary, work, reg, meter):
        self.bin, self.work, self.reg, self.meter = binary, work / "kiln", reg, meter
        self.cache = self.work / "cache"

    def cold_reset(self):
        shutil.rmtree(self.cache, ignore_errors=True)
        self.cache.mkdir(parents=True)

    def build(self, w, tag, logdir, label):
        cwd = self.work / "cwd"
        cwd.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.bin), "build", "--progress", "plain",
               "-f", str(w.dockerfile), "-t", tag, "--push", "--cache-dir", str(self.cache)]
        for r in sorted({self.reg, "127.0.0.1:5000", "localhost:5000"}):
            cmd += ["--insecure-registry", r]
        for a in w.build_args:
            cmd += ["--build-arg", a]
        cmd.append(str(w.ctx))
        logp = logdir / f"{label}.log"
        with open(logp, "wb") as lf:
            lf.write((" ".join(cmd) + "\n").encode())
            lf.flush()
            res = self.meter.run(cmd, dict(os.environ), str(cwd), lf)
        res["build_s"], res["push_s"] = res["wall_s"], None  # kiln pushes inside the build
        res["log"] = str(logp)
        try:
            text = logp.read_text(errors="replace")
            iso = [l.strip() for l in text.splitlines()
                   if "isolation" in l.lower() or "user namespaces" in l.lower()]
            res["isolation_log"] = iso[0][:300] if iso else None
            if res["rc"] == 0:
                res.update(step_figures(kiln_steps(text), res["wall_s"]))
        except OSError:
            pass
        return res


class Buildah:
    name = "buildah"

    def __init__(self, work, meter, jobs=None):
        self.work, self.meter, self.jobs = work / "buildah", meter, jobs
        self.root, self.runroot, self.tmp = self.work / "root", self.work / "runroot", self.work / "tmp"
        self.env = dict(os.environ, TMPDIR=str(self.tmp))

    def bh(self):
        return ["buildah", "--root", str(self.root), "--runroot", str(self.runroot)]

    def cold_reset(self):
        if self.root.exists():
            for sub in (["rm", "-a"], ["rmi", "-a", "-f"]):
                subprocess.run(self.bh() + sub, env=self.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        # unmount anything left under the storage root, deepest first, then delete it
        with open("/proc/self/mounts") as f:
            mnts = [l.split()[1] for l in f]
        for m in sorted((m for m in mnts if m.startswith(str(self.work) + "/")), reverse=True):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        for d in (self.root, self.runroot, self.tmp):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)

    def build(self, w, tag, logdir, label):
        for d in (self.root, self.runroot, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        cmd = self.bh() + ["build", "--isolation", "chroot", "--layers", "--tls-verify=false"]
        if self.jobs:
            cmd += ["--jobs", str(self.jobs)]
        for a in w.build_args:
            cmd += ["--build-arg", a]
        cmd += ["-f", str(w.dockerfile), "-t", tag, str(w.ctx)]
        logp = logdir / f"{label}.log"
        with open(logp, "wb") as lf:
            lf.write((" ".join(cmd) + "\n").encode())
            lf.flush()
            b = self.meter.run(cmd, self.env, str(self.work), lf)
            res = dict(b, build_s=b["wall_s"], push_s=None, log=str(logp))
            if b["rc"] != 0:
                return res
            push = self.bh() + ["push", "--tls-verify=false", tag]
            lf.write(("\n" + " ".join(push) + "\n").encode())
            lf.flush()
            p = self.meter.run(push, self.env, str(self.work), lf)
        res["rc"] = p["rc"]
        res["push_s"] = p["wall_s"]
        res["wall_s"] = round(b["wall_s"] + p["wall_s"], 3)
        for k in ("peak_rss_mb", "peak_pss_mb", "max_proc_rss_mb", "cgroup_peak_mb"):
            vals = [x for x in (b[k], p[k]) if x is not None]
            res[k] = max(vals) if vals else None
        return res


# ---------------------------------------------------------------- the run

def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_suite(args):
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logdir = work / "logs" / ts
    logdir.mkdir(parents=True)
    registry_proc = None
    reg = args.registry
    if args.own_registry:
        reg, registry_proc = start_registry(work)
    elif not has_image_catalog(reg):
        raise SystemExit(f"no registry answers at {reg}; use --own-registry or start one (see bench/README.md)")
    try:
        bases = ["library/busybox:latest", "library/debian:bookworm"]
        missing = [b for b in bases if not has_image(f"{reg}/{b}")]
        if missing and args.own_registry and has_image_catalog(args.bases_from):
            for b in missing:
                log(f"copying {b} from {args.bases_from} to {reg}")
                subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                                f"docker://{args.bases_from}/{b}", f"docker://{reg}/{b}"],
                               check=False, stdout=subprocess.DEVNULL)
            missing = [b for b in bases if not has_image(f"{reg}/{b}")]
        if missing:
            raise SystemExit(f"{reg} lacks base images {missing}: run bench/base-images.sh {reg}")

        names = [n for n in args.workloads.split(",") if n] if args.workloads is not None else PROJECT_WORKLOADS
        wls = project_workloads([n for n in names if n in PROJECT_WORKLOADS], work, reg)
        unknown = [n for n in names if n not in PROJECT_WORKLOADS]
        if unknown:
            raise SystemExit(f"unknown workloads {unknown}; known: {PROJECT_WORKLOADS}")
        if args.shared:
            if reg not in ("127.0.0.1:5000", "localhost:5000"):
                log("note: shared workloads pull FROM localhost:5000, whatever --registry says")
            sh_names = [n for n in args.shared_workloads.split(",") if n] \
                if args.shared_workloads is not None else PROJECT_WORKLOADS
            wls += shared_workloads(Path(args.shared), sh_names, work, args.seeds,
                                    [n for n in (args.seed_names or "").split(",") if n])
        if args.only_shared:
            wls = [w for w in wls if w.shared]
        for w in wls:
            w.prepare()

        meter = TreeMeter(timeout=args.timeout)
        builders = []
        if "kiln" in args.builders:
            kbin = Path(args.kiln)
            if not os.access(kbin, os.X_OK):
                raise SystemExit(f"kiln binary {kbin} not found: cargo build --release -p kiln-cli")
            builders.append(Kiln(kbin, work, reg, meter))
        if "buildah" in args.builders:
            builders.append(Buildah(work, meter, args.buildah_jobs))

        kver = subprocess.run([args.kiln, "--version"], capture_output=True, text=True).stdout.strip() \
            if "kiln" in args.builders else None
        bver = subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout.strip()
        git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        meta = {"timestamp": ts, "registry": reg, "kiln": kver, "kiln_binary": str(args.kiln),
                "kiln_commit": os.environ.get("KILN_COMMIT", git), "buildah": bver, "nproc": os.cpu_count(),
                "kernel": platform.release(), "memory_meter": meter.describe(),
                "rounds": args.rounds, "work": str(work), "logs": str(logdir)}
        log(f"memory meter: {meter.describe()}")
        runs = []
        out_json = Path(args.results) / f"{ts}.json"
        out_json.parent.mkdir(parents=True, exist_ok=True)

        def save():
            out_json.write_text(json.dumps({"meta": meta, "runs": runs,
                                            "summary": summarize(runs, wls, builders)}, indent=1))

        for w in wls:
            rounds = args.big_rounds if w.name.endswith("copy-big") and w.rounds == 1 else args.rounds
            for r in range(args.round_offset, args.round_offset + rounds):
                order = builders if r % 2 == 0 else list(reversed(builders))
                for b in order:
                    tag = f"{reg}/bench/{w.name.replace('shared/', 'shared-')}:{b.name}"
                    cold_ok = True
                    modes = ("cold", "warm", "edit") if args.edit and w.edit else ("cold", "warm")
                    for mode in modes:
                        if mode != "cold" and not cold_ok:
                            runs.append({"workload": w.name, "builder": b.name, "mode": mode,
                                         "round": r + 1, "rc": None, "skipped": "cold build failed"})
                            continue
                        if mode == "cold":
                            b.cold_reset()
                        label = f"{w.name.replace('/', '_')}.{b.name}.{mode}{r + 1}"
                        l1 = load1()
                        extra = {}
                        if mode == "edit":
                            # the same change for both builders of a round; undone right after
                            w.edit.apply(f"{ts} round {r + 1}")
                            extra["edit_file"] = w.edit.rel
                            try:
                                res = b.build(w, tag, logdir, label)
                            finally:
                                w.edit.restore()
                        else:
                            res = b.build(w, tag, logdir, label)
                        rec = {"workload": w.name, "builder": b.name, "mode": mode, "round": r + 1,
                               "load1": l1, **extra, **res}
                        if res["rc"] == 0:
                            try:
                                rec["image_mb"], rec["layers"] = image_size(tag)
                            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                                rec["image_error"] = str(e)
                        else:
                            rec["error"] = first_lines(res["log"], tail=True)
                            cold_ok = cold_ok and mode != "cold"
                        runs.append(rec)
                        status = "ok" if res["rc"] == 0 else f"FAILED rc={res['rc']}"
                        steps = (f" ({res['steps_ran']} step(s) ran in {res['steps_ran_s']:.2f}s, "
                                 f"overhead {res['overhead_s']:.2f}s)") if "overhead_s" in res else ""
                        log(f"{w.name} {b.name} {mode} r{r + 1}: {status} {res['wall_s']:.2f}s{steps} "
                            f"peak {res['peak_rss_mb']} MB (load {l1})")
                        save()
        save()
        md = render(meta, runs, wls, builders)
        (Path(args.results) / f"{ts}.md").write_text(md)
        if not args.no_latest:
            (Path(args.results) / "latest.md").write_text(md)
        print(md)
        log(f"results: {out_json}")
    finally:
        if registry_proc:
            registry_proc.send_signal(signal.SIGTERM)
            registry_proc.wait(timeout=10)


def summarize(runs, wls, builders):
    s = {}
    for w in wls:
        e = s[w.name] = {}
        for b in builders:
            for mode in ("cold", "warm", "edit"):
                rs = [r for r in runs if r["workload"] == w.name and r["builder"] == b.name
                      and r["mode"] == mode]
                if mode == "edit" and not rs:
                    continue
                ok = [r for r in rs if r.get("rc") == 0]
                e[f"{b.name}_{mode}"] = {
                    "runs": len(rs), "ok": len(ok),
                    "median_s": median([r["wall_s"] for r in ok]),
                    "median_peak_rss_mb": median([r["peak_rss_mb"] for r in ok]),
                    "max_peak_rss_mb": max([r["peak_rss_mb"] for r in ok], default=None),
                    "median_peak_pss_mb": median([r["peak_pss_mb"] for r in ok]),
                    "image_mb": median([r["image_mb"] for r in ok if "image_mb" in r]),
                    "errors": sorted({r["error"] for r in rs if r.get("error")}),
                }
                if any("overhead_s" in r for r in ok):
                    e[f"{b.name}_{mode}"].update({
                        "median_steps_ran": median([r["steps_ran"] for r in ok if "steps_ran" in r]),
                        "median_steps_ran_s": median([r["steps_ran_s"] for r in ok if "steps_ran_s" in r]),
                        "median_overhead_s": median([r["overhead_s"] for r in ok if "overhead_s" in r]),
                        "max_overhead_s": max([r["overhead_s"] for r in ok if "overhead_s" in r]),
                    })
        for mode, i in (("cold", 0), ("warm", 1)):
            k, bh = e.get(f"kiln_{mode}", {}), e.get(f"buildah_{mode}", {})
            if k.get("median_s") and bh.get("median_s"):
                ratio = k["median_s"] / bh["median_s"]
                bk = BUILDKIT_RATIO.get(w.name.replace("shared/", ""), (None, None))[i]
                e[f"ratio_{mode}"] = round(ratio, 3)
                e[f"buildkit_ratio_{mode}"] = bk
                e[f"beats_buildkit_{mode}"] = (ratio < bk) if bk is not None else None
    return s


def rounds_desc(runs):
    per = {}
    for r in runs:
        per.setdefault(r["workload"], set()).add(r["round"])
    groups = {}
    for w, rs in per.items():
        groups.setdefault(len(rs), []).append(w)
    return ", ".join(f"{n} for {', '.join(ws)}" for n, ws in sorted(groups.items(), reverse=True))


def fmt(x, nd=2):
    return "—" if x is None else f"{x:.{nd}f}"


def render(meta, runs, wls, builders):
    s = summarize(runs, wls, builders)
    loads = [r["load1"] for r in runs if "load1" in r]
    lines = [
        f"# kiln vs buildah — {meta['timestamp']}", "",
        f"kiln {meta['kiln']} (commit {meta['kiln_commit']}), {meta['buildah']}; "
        f"{meta['nproc']} CPUs, kernel {meta['kernel']}; registry {meta['registry']} (loopback).",
        f"Rounds: {rounds_desc(runs)}; builders alternated per round; every build pushes. "
        f"load1 at build start: {fmt(min(loads, default=None), 1)}–{fmt(max(loads, default=None), 1)} "
        "on 2 CPUs — the machine was shared with compilers, so expect ±30 % noise.",
        f"Memory: {meta['memory_meter']}; peak RSS = sampled sum over the whole process tree.", "",
        "Times: median wall seconds (buildah = build + push). ratio = kiln ÷ buildah; "
        "BK = BuildKit ÷ buildah on the reference machine; ✓ = kiln's ratio is below BuildKit's.", "",
        "| workload | kiln cold | buildah cold | ratio (BK) | kiln warm | buildah warm | ratio (BK) "
        "| peak RSS MB kiln / buildah | image MB kiln / buildah |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for w in wls:
        e = s[w.name]
        row = [w.name]
        for mode in ("cold", "warm"):
            k, b = e.get(f"kiln_{mode}", {}), e.get(f"buildah_{mode}", {})
            kt = fmt(k.get("median_s")) if k.get("ok") else ("FAILED" if k.get("runs") else "—")
            if k.get("ok") and k.get("ok") < k.get("runs", 0):
                kt += f" ({k['runs'] - k['ok']} failed)"
            bt = fmt(b.get("median_s")) if b.get("ok") else ("FAILED" if b.get("runs") else "—")
            r = e.get(f"ratio_{mode}")
            bk = BUILDKIT_RATIO.get(w.name.replace("shared/", ""), (None, None))[0 if mode == "cold" else 1]
            mark = "" if e.get(f"beats_buildkit_{mode}") is None else (
                " ✓" if e[f"beats_buildkit_{mode}"] else " ✗")
            row += [kt, bt, f"{fmt(r)} ({fmt(bk)}){mark}" if r is not None else f"— ({fmt(bk)})"]
        peaks = []
        sizes = []
        for bn in ("kiln", "buildah"):
            ps = [e.get(f"{bn}_{m}", {}).get("max_peak_rss_mb") for m in ("cold", "warm")]
            ps = [p for p in ps if p is not None]
            peaks.append(fmt(max(ps), 0) if ps else "—")
            sizes.append(fmt(e.get(f"{bn}_cold", {}).get("image_mb") or e.get(f"{bn}_warm", {}).get("image_mb"), 1))
        row += [" / ".join(peaks), " / ".join(sizes)]
        lines.append("| " + " | ".join(row) + " |")
        for bn in ("kiln", "buildah"):
            for mode in ("cold", "warm", "edit"):
                for err in e.get(f"{bn}_{mode}", {}).get("errors", []):
                    notes.append(f"- **{w.name}**, {bn} {mode}:\n\n```\n{err}\n```")
    iso = sorted({r["isolation_log"].split("] ", 1)[-1] if r["isolation_log"].startswith("[")
                  else r["isolation_log"] for r in runs if r.get("isolation_log")})
    lines += ["", "Peak RSS column: the highest per-build peak (cold or warm) of each builder.",
              f"buildah's reference peak: ~{BUILDAH_PEAK_MB_REF} MB (largest single process)."]
    lines += render_edit(s, runs, wls)
    if iso:
        lines += ["", "kiln isolation (from its log): " + "; ".join(f"`{i}`" for i in iso)]
    if notes:
        lines += ["", "## Failures (first error lines; full logs under " + meta["logs"] + ")", ""] + notes
    return "\n".join(lines) + "\n"


def render_edit(s, runs, wls):
    """The edit table: rebuild after one context file changed (target: the re-run
    steps' time plus under EDIT_OVERHEAD_TARGET_S of kiln overhead)."""
    rows = [w.name for w in wls if any(r["workload"] == w.name and r["mode"] == "edit" for r in runs)]
    if not rows:
        return []
    out = ["", "## Rebuild after one source change (edit)", "",
           "One context file changed (appended one line), rebuilt warm; medians. steps re-run = kiln's "
           "RUN/COPY/ADD/WORKDIR steps not CACHED (from `--progress plain`); overhead = kiln wall − their "
           f"summed time (target < {EDIT_OVERHEAD_TARGET_S} s: ✓ / ✗ on the worst round).", "",
           "| workload | file changed | kiln edit | steps re-run (n, s) | kiln overhead | buildah edit |",
           "|---|---|---|---|---|---|"]
    for n in rows:
        e = s[n]
        k, b = e.get("kiln_edit", {}), e.get("buildah_edit", {})
        files = sorted({r["edit_file"] for r in runs if r["workload"] == n and r.get("edit_file")})
        kt = fmt(k.get("median_s")) if k.get("ok") else ("FAILED" if k.get("runs") else "—")
        bt = fmt(b.get("median_s")) if b.get("ok") else ("FAILED" if b.get("runs") else "—")
        if k.get("median_overhead_s") is not None:
            steps = f"{fmt(k['median_steps_ran'], 0)}, {fmt(k['median_steps_ran_s'])}"
            mark = " ✓" if k["max_overhead_s"] < EDIT_OVERHEAD_TARGET_S else " ✗"
            ov = fmt(k["median_overhead_s"]) + mark
        else:
            steps = ov = "—"
        out.append(f"| {n} | `{', '.join(files)}` | {kt} | {steps} | {ov} | {bt} |")
    return out


class _W:  # a workload name, for rendering saved results
    def __init__(self, name):
        self.name = name


class _B:
    def __init__(self, name):
        self.name = name


def render_files(args):
    metas, runs = [], []
    for f in args.render:
        d = json.loads(Path(f).read_text())
        metas.append(d["meta"])
        runs += d["runs"]
    meta = dict(metas[0])
    meta["timestamp"] = " + ".join(m["timestamp"] for m in metas)
    meta["logs"] = ", ".join(m["logs"] for m in metas)
    meta["rounds"] = max(r["round"] for r in runs) if runs else 0
    names = list(dict.fromkeys(r["workload"] for r in runs))
    bnames = list(dict.fromkeys(r["builder"] for r in runs))
    md = render(meta, runs, [_W(n) for n in names], [_B(b) for b in bnames])
    if not args.no_latest:
        (Path(args.results) / "latest.md").write_text(md)
    print(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", help=f"comma list (default all: {','.join(PROJECT_WORKLOADS)}); "
                                        "empty string = none")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per workload (default 3)")
    ap.add_argument("--big-rounds", type=int, default=1, help="rounds for copy-big (default 1)")
    ap.add_argument("--builders", default="kiln,buildah")
    ap.add_argument("--kiln", default=os.environ.get("KILN", str(REPO / "target/release/kiln")))
    ap.add_argument("--registry", default="127.0.0.1:5000",
                    help="registry holding library/busybox:latest and library/debian:bookworm")
    ap.add_argument("--own-registry", action="store_true",
                    help="start a private docker-registry on a free port under --work "
                         "(bases copied from --bases-from)")
    ap.add_argument("--bases-from", default="127.0.0.1:5000")
    ap.add_argument("--work", default=os.environ.get("KILN_BENCH_WORK", "/var/tmp/kiln-bench-suite"))
    ap.add_argument("--results", default=str(BENCH / "results"))
    ap.add_argument("--no-latest", action="store_true", help="do not overwrite results/latest.md")
    ap.add_argument("--no-edit", dest="edit", action="store_false",
                    help="skip the edit mode (rebuild after changing the workload's one `edit` file)")
    ap.add_argument("--round-offset", type=int, default=0,
                    help="number rounds from N+1 (to extend an earlier run; order keeps alternating)")
    ap.add_argument("--render", nargs="+", metavar="JSON",
                    help="only re-render the table from result files (merged; e.g. a run and its extension)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds before a build is killed")
    ap.add_argument("--buildah-jobs", type=int, help="buildah --jobs (default: buildah's default)")
    ap.add_argument("--shared", help="also run the workloads of this folder (e.g. /work/shared/workloads)")
    ap.add_argument("--shared-workloads", help="comma list of shared synthetic workloads (default all six); "
                                                "empty string = none (e.g. only the seeds)")
    ap.add_argument("--seeds", action="store_true", help="with --shared: also the three seed-weather images")
    ap.add_argument("--seed-names", help="with --seeds: comma list of seed images (default all three: "
                                          + ",".join(SEEDS) + ")")
    ap.add_argument("--only-shared", action="store_true", help="with --shared: skip the project's workloads")
    args = ap.parse_args()
    if args.render:
        render_files(args)
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: buildah's private store and the cgroup meter need it")
    run_suite(args)


if __name__ == "__main__":
    main()
