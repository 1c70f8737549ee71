#!/usr/bin/env python3
"""Writes the seed corpora the fuzz runs in README.md started from:
corpus/layer_apply (tars), corpus/dockerignore (the dockerignore test
sections), corpus/manifest (linked OCI / Docker JSON). Run from fuzz/."""
import glob, io, json, os, re, tarfile

def layer_seeds(out):
    def mk(name, entries, fmt=tarfile.GNU_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
            for e in entries:
                kind, path = e[0], e[1]
                ti = tarfile.TarInfo(path)
                ti.mtime = 1700000000
                data = b""
                if kind == "f":
                    data = e[2] if len(e) > 2 else b"hello\n"
                    ti.size = len(data)
                    ti.mode = e[3] if len(e) > 3 else 0o644
                elif kind == "d":
                    ti.type = tarfile.DIRTYPE
                    ti.mode = e[2] if len(e) > 2 else 0o755
                elif kind == "l":
                    ti.type = tarfile.SYMTYPE
                    ti.linkname = e[2]
                elif kind == "h":
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = e[2]
                elif kind == "c":
                    ti.type = tarfile.CHRTYPE
                    ti.devmajor, ti.devminor = 1, 3
                elif kind == "p":
                    ti.type = tarfile.FIFOTYPE
                t.addfile(ti, io.BytesIO(data) if data else None)
        for flag in (0, 1, 2, 4):
            with open(os.path.join(out, f"{name}-{flag}"), "wb") as f:
                f.write(bytes([flag]) + buf.getvalue())

    mk("basic", [("d", "etc/"), ("f", "etc/passwd", b"root:x:0:0\n"), ("l", "bin", "usr/bin"),
                 ("d", "usr/bin/"), ("f", "usr/bin/sh", b"#!", 0o755), ("h", "usr/bin/dash", "usr/bin/sh")])
    mk("whiteout", [("d", "a/"), ("f", "a/x"), ("f", "a/.wh.x"), ("f", "a/.wh..wh..opq"), ("f", ".wh.a")])
    mk("symlink-then-write", [("l", "s", "../canary"), ("f", "s/owned")])
    mk("hardlink-out", [("h", "h", "../canary/file"), ("f", "h", b"x")])
    mk("devices", [("c", "dev/null"), ("p", "dev/fifo"), ("d", "proc/"), ("f", "proc/x"), ("d", "kiln/"), ("f", "kiln/k")])
    mk("pax-long", [("d", "a" * 120 + "/"), ("f", "a" * 120 + "/" + "b" * 150), ("l", "l" * 200, "/" + "t" * 150)],
       fmt=tarfile.PAX_FORMAT)
    mk("dup", [("f", "x", b"1"), ("d", "x/"), ("f", "x", b"2"), ("l", "x", "x"), ("f", "x/y")])
    mk("setuid", [("f", "su", b"#!", 0o4755), ("d", "sg/", 0o2775), ("d", "ro/", 0o555), ("f", "ro/f"),
                  ("d", "none/", 0o000), ("f", "none/f")])
    mk("abs", [("f", "/abs"), ("f", "./rel"), ("f", "x/../y"), ("l", "up", "../../../../"), ("f", "up/z")])
    # Issue 14's finding 1 (also kept in crates/kiln-image/tests/fuzz_regressions/):
    # left out of the fb3692c runs, which it crashed at once; back in since.
    mk("symlink-replaces-dir", [("d", "d/", 0o6777), ("f", "d/f"), ("l", "d", "../canary")])

def dockerignore_seeds(out):
    n = 0
    for f in sorted(glob.glob("../crates/kiln-dockerfile/testdata/dockerignore/patterns/*.txt")):
        for sec in open(f).read().split("\n===\n"):
            pats, paths = [], []
            for line in sec.splitlines():
                if line.startswith("p "):
                    pats.append(line[2:])
                elif line[:2] in ("x ", "i "):
                    paths.append(line[2:])
                elif line.startswith(("skip ", "walk ")):
                    paths.append(line.split(" ", 1)[1])
            if pats:
                with open(f"{out}/sec-{n}", "w") as o:
                    o.write("\n".join(pats) + "\0" + "\n".join(paths))
                n += 1
    for f in sorted(glob.glob("../crates/kiln-dockerfile/testdata/dockerignore/files/*.dockerignore")):
        exp = f[: -len(".dockerignore")] + ".expect"
        paths = ""
        if os.path.exists(exp):
            paths = "\n".join(l.split(" ", 1)[-1] for l in open(exp).read().splitlines()
                              if l and not l.startswith("#"))
        with open(f"{out}/file-{os.path.basename(f)}", "w") as o:
            o.write(open(f).read() + "\0" + paths)

def manifest_seeds(out):
    M = "application/vnd.oci.image.manifest.v1+json"
    I = "application/vnd.oci.image.index.v1+json"
    DM = "application/vnd.docker.distribution.manifest.v2+json"
    DL = "application/vnd.docker.distribution.manifest.list.v2+json"

    def d(mt, n, plat=None, ann=None):
        x = {"mediaType": mt, "digest": f"@{n}", "size": f"#{n}"}
        if plat:
            x["platform"] = plat
        if ann:
            x["annotations"] = ann
        return x

    def cfg(arch, var=None):
        return json.dumps({"architecture": arch, "os": "linux", **({"variant": var} if var else {}),
                           "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "User": "0", "Labels": {"a": "b"}},
                           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
                           "history": [{"created_by": "x", "empty_layer": True}]})

    seeds = {
        "index-two": [
            {"schemaVersion": 2, "mediaType": I, "manifests": [
                d(M, 1, {"architecture": "amd64", "os": "linux"}, {"org.opencontainers.image.ref.name": "latest"}),
                d(M, 2, {"architecture": "arm64", "os": "linux", "variant": "v8"})]},
            {"schemaVersion": 2, "mediaType": M, "config": d("application/vnd.oci.image.config.v1+json", 3),
             "layers": [d("application/vnd.oci.image.layer.v1.tar+gzip", 5)]},
            {"schemaVersion": 2, "mediaType": M, "config": d("application/vnd.oci.image.config.v1+json", 4),
             "layers": []},
            cfg("amd64"), cfg("arm64", "v8"), "layer-bytes"],
        "nested": [
            {"schemaVersion": 2, "manifests": [d(I, 1)]},
            {"schemaVersion": 2, "mediaType": I, "manifests": [d(M, 2)]},
            {"schemaVersion": 2, "config": d(M, 3), "layers": []},
            cfg("amd64")],
        "docker-list": [
            {"schemaVersion": 2, "mediaType": DL, "manifests": [
                d(DM, 1, {"architecture": "arm", "os": "linux", "variant": "v7"}),
                d(DM, 2, {"architecture": "amd64", "os": "windows", "os.version": "10.0", "os.features": ["win32k"]})]},
            {"schemaVersion": 2, "mediaType": DM, "config": d("application/vnd.docker.container.image.v1+json", 3),
             "layers": []},
            {"schemaVersion": 2, "mediaType": DM, "config": d("application/vnd.docker.container.image.v1+json", 3),
             "layers": []},
            cfg("arm", "v7")],
        "schema1": [{"schemaVersion": 1, "name": "x", "fsLayers": []}],
        "manifest-only": [{"schemaVersion": 2, "mediaType": M, "config": d(M, 1), "layers": [],
                           "annotations": {"k": "v"}}, cfg("amd64")],
    }
    for name, docs in seeds.items():
        body = b"\0".join((x if isinstance(x, str) else re.sub(r'"#(\d)"', r"#\1", json.dumps(x))).encode()
                          for x in docs)
        for flags in (0, 1, 0x21, 0x42, 0x08, 0xA3, 0x10):
            with open(f"{out}/{name}-{flags:02x}", "wb") as f:
                f.write(bytes([flags]) + body)

for target, make in (("layer_apply", layer_seeds), ("dockerignore", dockerignore_seeds),
                     ("manifest", manifest_seeds)):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    make(f"corpus/{target}")
