#!/usr/bin/env python3
"""S3 build context benchmark: kiln's fetch-and-extract of an s3:// context
against `aws s3 cp` + `tar xzf` of the same object from the same local
S3 server (moto_server on loopback).

Run through bench/s3-context/run.sh; see bench/s3-context/README.md.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)

BUCKET = "kiln-s3-bench"
KEY = "ctx.tar.gz"
CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
DOCKERFILE = b"FROM scratch\nCOPY marker /marker\n"
MARKER = b"kiln s3-context benchmark marker\n"
STEP_STARTED = re.compile(r"^#\d+ \[")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- context


def file_sizes(rng, count, total):
    """`count` mixed sizes summing to exactly `total` bytes: 0.5 % large
    (log-uniform 256 KiB-4 MiB), the rest log-uniform 64 B-48 KiB, all
    scaled to the total."""
    raw = []
    for _ in range(count):
        if rng.random() < 0.005:
            lo, hi = 256 << 10, 4 << 20
        else:
            lo, hi = 64, 48 << 10
        raw.append(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    scale = total / sum(raw)
    sizes = [max(1, int(s * scale)) for s in raw]
    sizes[-1] = max(1, sizes[-1] + total - sum(sizes))
    return sizes


def generate(ctx, files, total, seed):
    """A deterministic context: Dockerfile + marker + `files - 2` files in
    400 directories; a third random bytes, a third hex text, a third text
    lines drawn from a fixed pool (compressible like source code)."""
    rng = random.Random(seed)
    os.makedirs(ctx)
    with open(os.path.join(ctx, "Dockerfile"), "wb") as f:
        f.write(DOCKERFILE)
    with open(os.path.join(ctx, "marker"), "wb") as f:
        f.write(MARKER)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 10)))
             for _ in range(500)]
    pool = [(" " * rng.choice((0, 4, 8))
             + " ".join(rng.choices(words, k=rng.randint(1, 10))) + "\n").encode()
            for _ in range(4000)]
    n = files - 2
    sizes = file_sizes(rng, n, total - len(DOCKERFILE) - len(MARKER))
    for i, size in enumerate(sizes):
        d = os.path.join(ctx, f"d{i % 400:03d}")
        kind = i % 3
        if kind == 0:
            data, ext = rng.randbytes(size), "bin"
        elif kind == 1:
            data, ext = rng.randbytes((size + 1) // 2).hex().encode()[:size], "txt"
        else:
            parts, have = [], 0
            while have < size:
                line = rng.choice(pool)
                parts.append(line)
                have += len(line)
            data, ext = b"".join(parts)[:size], "src"
        if i < 400:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:05d}.{ext}"), "wb") as f:
            f.write(data)


def build_tarball(work, files, total, seed):
    """Generates and compresses the context once per parameter set (and
    version of this script); returns the tarball path."""
    with open(__file__, "rb") as f:
        me = hashlib.sha256(f.read()).hexdigest()[:16]
    stamp = f"files={files} bytes={total} seed={seed} gen={me}\n"
    tarball = os.path.join(work, KEY)
    stamp_path = tarball + ".stamp"
    if os.path.exists(tarball) and os.path.exists(stamp_path):
        with open(stamp_path) as f:
            if f.read() == stamp:
                log(f"context: reusing {tarball}")
                return tarball
    ctx = os.path.join(work, "ctx")
    shutil.rmtree(ctx, ignore_errors=True)
    for p in (tarball, stamp_path):
        if os.path.exists(p):
            os.remove(p)
    t0 = time.monotonic()
    log(f"context: generating {files} files, {total / 1e6:.0f} MB (seed {seed})")
    generate(ctx, files, total, seed)
    log(f"context: generated in {time.monotonic() - t0:.1f}s; compressing")
    subprocess.run(
        "set -o pipefail; tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner "
        f"-C '{ctx}' -cf - . | gzip -n -6 > '{tarball}.part'",
        shell=True, executable="/bin/bash", check=True)
    os.rename(tarball + ".part", tarball)
    shutil.rmtree(ctx)
    with open(stamp_path, "w") as f:
        f.write(stamp)
    log(f"context: {tarball} ready after {time.monotonic() - t0:.1f}s")
    return tarball


# ---------------------------------------------------------------- server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(work):
    port = free_port()
    out = open(os.path.join(work, "moto.log"), "wb")
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                sys.exit(f"moto_server did not start (see {work}/moto.log)")
            time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}"


def upload(endpoint, tarball):
    import boto3  # moto[server] depends on it
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    t0 = time.monotonic()
    s3.upload_file(tarball, BUCKET, KEY)
    size = s3.head_object(Bucket=BUCKET, Key=KEY)["ContentLength"]
    log(f"upload: {size} bytes in {time.monotonic() - t0:.1f}s")
    return size


# ---------------------------------------------------------------- runs


def max_rss_kib(path):
    with open(path) as f:
        for line in f:
            if "Maximum resident set size" in line:
                return int(line.rsplit(":", 1)[1])
    return None


def count_files(root):
    return sum(len(fs) for _, _, fs in os.walk(root))


def timed(cmd, env, logf, rss):
    """Runs a shell command under GNU time; returns (seconds, rc)."""
    t0 = time.monotonic()
    rc = subprocess.run(["/usr/bin/time", "-v", "-o", rss, "/bin/bash", "-c",
                         "set -o pipefail; " + cmd],
                        env=env, stdout=logf, stderr=logf).returncode
    return time.monotonic() - t0, rc


def run_aws_pipe(ctx, rnd):
    dest = os.path.join(ctx["scratch"], "aws-pipe")
    os.makedirs(dest)
    rss = os.path.join(ctx["logs"], f"aws-pipe-{rnd}.time")
    with open(os.path.join(ctx["logs"], f"aws-pipe-{rnd}.log"), "wb") as logf:
        secs, rc = timed(f"aws --endpoint-url {ctx['endpoint']} s3 cp s3://{BUCKET}/{KEY} - "
                         f"| tar xzf - -C '{dest}'", ctx["env"], logf, rss)
    res = {"seconds": secs, "rc": rc, "peak_rss_kib": max_rss_kib(rss)}
    res["files"] = count_files(dest)
    shutil.rmtree(dest)
    return res


def run_aws_two_step(ctx, rnd):
    dest = os.path.join(ctx["scratch"], "aws-2step")
    os.makedirs(dest)
    obj = os.path.join(ctx["scratch"], "aws-2step.tar.gz")
    rss_cp = os.path.join(ctx["logs"], f"aws-cp-{rnd}.time")
    rss_tar = os.path.join(ctx["logs"], f"aws-tar-{rnd}.time")
    with open(os.path.join(ctx["logs"], f"aws-2step-{rnd}.log"), "wb") as logf:
        cp_s, rc = timed(f"aws --endpoint-url {ctx['endpoint']} s3 cp --only-show-errors "
                         f"s3://{BUCKET}/{KEY} '{obj}'", ctx["env"], logf, rss_cp)
        tar_s, rc2 = (0.0, rc) if rc else timed(f"tar xzf '{obj}' -C '{dest}'",
                                                ctx["env"], logf, rss_tar)
    res = {"seconds": cp_s + tar_s, "cp_seconds": cp_s, "tar_seconds": tar_s,
           "rc": rc or rc2, "peak_rss_kib": max_rss_kib(rss_cp)}
    res["files"] = count_files(dest)
    shutil.rmtree(dest)
    os.remove(obj)
    return res


def run_kiln(ctx, rnd):
    cache = os.path.join(ctx["scratch"], "kiln-cache")
    out = os.path.join(ctx["scratch"], "kiln-out")
    rss = os.path.join(ctx["logs"], f"kiln-{rnd}.time")
    env = dict(ctx["env"], S3_ENDPOINT=ctx["endpoint"], S3_FORCE_PATH_STYLE="true",
               KILN_CACHE_DIR=cache)
    cmd = ["/usr/bin/time", "-v", "-o", rss, ctx["kiln"], "build", "--progress", "plain",
           "--output", f"type=oci,dest={out}", f"s3://{BUCKET}/{KEY}"]
    first_step = None
    lines = []
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for raw in proc.stderr:
        now = time.monotonic() - t0
        line = raw.decode(errors="replace").rstrip("\n")
        lines.append(f"[{now:8.3f}s] {line}")
        if first_step is None and STEP_STARTED.match(line):
            first_step = now
    rc = proc.wait()
    total = time.monotonic() - t0
    with open(os.path.join(ctx["logs"], f"kiln-{rnd}.log"), "w") as f:
        f.write("\n".join(lines) + "\n")
    res = {"seconds": total, "fetch_extract_seconds": first_step, "rc": rc,
           "peak_rss_kib": max_rss_kib(rss)}
    if rc == 0:
        with open(os.path.join(out, "index.json")) as f:
            res["oci_manifests"] = len(json.load(f).get("manifests", []))
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return res


RUNNERS = {"aws-pipe": run_aws_pipe, "aws-2step": run_aws_two_step, "kiln": run_kiln}


def aws_version():
    p = subprocess.run(["aws", "--version"], capture_output=True, text=True)
    return (p.stdout + p.stderr).strip() or "unknown"


def median(runs, key):
    vals = [r[key] for r in runs if r["rc"] == 0 and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", default=os.environ.get("KILN", os.path.join(REPO, "target/release/kiln")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--mb", type=float, default=200, help="uncompressed context size, MB (10^6 B)")
    ap.add_argument("--seed", type=int, default=20000)
    ap.add_argument("--work", default=os.environ.get("KILN_BENCH_WORK_S3", "/var/tmp/kiln-s3-context"))
    ap.add_argument("--results", default=os.path.join(BENCH, "results"))
    a = ap.parse_args()
    if not os.access(a.kiln, os.X_OK):
        sys.exit(f"no kiln binary at {a.kiln} (--kiln PATH or KILN=PATH)")
    os.makedirs(a.work, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    total = int(a.mb * 1e6)
    tarball = build_tarball(a.work, a.files, total, a.seed)
    with open(tarball, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest") \
            else hashlib.sha256(f.read()).hexdigest()

    scratch = os.path.join(a.work, "scratch")
    logs = os.path.join(a.work, "logs", stamp)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    os.makedirs(logs)
    moto, endpoint = start_moto(a.work)
    try:
        size = upload(endpoint, tarball)
        env = dict(os.environ, **CREDS)
        env.pop("AWS_PROFILE", None)
        ctx = {"endpoint": endpoint, "env": env, "kiln": a.kiln, "scratch": scratch, "logs": logs}
        order = ["aws-pipe", "aws-2step", "kiln"]
        runs = {k: [] for k in order}
        for rnd in range(1, a.rounds + 1):
            seq = order if rnd % 2 else list(reversed(order))
            for name in seq:
                r = RUNNERS[name](ctx, rnd)
                r["round"] = rnd
                runs[name].append(r)
                extra = ""
                if name == "kiln" and r["fetch_extract_seconds"] is not None:
                    extra = f" (fetch+extract {r['fetch_extract_seconds']:.2f}s)"
                log(f"round {rnd} {name}: {r['seconds']:.2f}s{extra} rc={r['rc']}")
    finally:
        moto.send_signal(signal.SIGTERM)
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
        shutil.rmtree(scratch, ignore_errors=True)

    expected = a.files
    failures = []
    for name, rs in runs.items():
        for r in rs:
            if r["rc"] != 0:
                failures.append(f"{name} round {r['round']}: rc {r['rc']}")
            elif "files" in r and r["files"] != expected:
                failures.append(f"{name} round {r['round']}: {r['files']} files, expected {expected}")

    mb = size / 1e6
    summary = {}
    for name in order:
        summary[name] = {"median_seconds": median(runs[name], "seconds"),
                         "median_peak_rss_kib": median(runs[name], "peak_rss_kib")}
    summary["aws-2step"]["median_cp_seconds"] = median(runs["aws-2step"], "cp_seconds")
    summary["aws-2step"]["median_tar_seconds"] = median(runs["aws-2step"], "tar_seconds")
    summary["kiln"]["median_fetch_extract_seconds"] = median(runs["kiln"], "fetch_extract_seconds")
    fe = summary["kiln"]["median_fetch_extract_seconds"]
    kt = summary["kiln"]["median_seconds"]
    for name in ("aws-pipe", "aws-2step"):
        s = summary[name]["median_seconds"]
        summary[name]["ratio_kiln_fetch_extract"] = fe / s if fe and s else None
        summary[name]["ratio_kiln_total"] = kt / s if kt and s else None

    def row(label, secs, rss=None):
        if secs is None:
            return f"| {label} | failed | | |"
        r = f"{rss / 1024:.0f} MiB" if rss else ""
        return f"| {label} | {secs:.2f} | {mb / secs:.0f} | {r} |"

    kr = summary["kiln"]["median_peak_rss_kib"]
    table = [
        f"S3 context: {expected} files, {total / 1e6:.0f} MB unpacked, {mb:.1f} MB object "
        f"(gzip), {a.rounds} rounds, medians; MB/s = object MB / s",
        "",
        "| run | seconds | MB/s | peak RSS (largest process) |",
        "|---|---|---|---|",
        row("aws s3 cp - \\| tar xzf", summary["aws-pipe"]["median_seconds"],
            summary["aws-pipe"]["median_peak_rss_kib"]),
        row("aws s3 cp FILE, then tar xzf", summary["aws-2step"]["median_seconds"],
            summary["aws-2step"]["median_peak_rss_kib"]),
        row("  of which aws s3 cp", summary["aws-2step"]["median_cp_seconds"]),
        row("  of which tar xzf", summary["aws-2step"]["median_tar_seconds"]),
        row("kiln fetch+extract (to first step)", fe, kr),
        row("kiln build, total wall", kt, kr),
        "",
    ]
    for name, label in (("aws-pipe", "piped"), ("aws-2step", "two-step")):
        r1 = summary[name]["ratio_kiln_fetch_extract"]
        r2 = summary[name]["ratio_kiln_total"]
        if r1 and r2:
            table.append(f"ratio kiln / aws {label}: fetch+extract {r1:.2f}, total {r2:.2f}")
    if failures:
        table.append("")
        table.extend(f"FAILED: {f}" for f in failures)
    print("\n".join(table))

    load = os.getloadavg()
    result = {
        "benchmark": "s3-context",
        "timestamp": stamp,
        "kiln": a.kiln,
        "rounds": a.rounds,
        "context": {"files": expected, "unpacked_bytes": total, "object_bytes": size,
                    "seed": a.seed, "sha256": digest},
        "server": "moto_server on 127.0.0.1",
        "aws_cli": aws_version(),
        "loadavg_end": load,
        "page_cache": "not dropped (shared machine): the object is served from moto's memory/page cache",
        "runs": runs,
        "summary": summary,
        "failures": failures,
        "logs": logs,
    }
    os.makedirs(a.results, exist_ok=True)
    path = os.path.join(a.results, f"s3-context-{stamp}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    log(f"results: {path}\nlogs: {logs}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
