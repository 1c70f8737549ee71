//! SBOM scans of real package databases, checked against the package managers' own
//! tools (`dpkg-query`, `pip list`, Python's `tomllib`) and the SPDX output against
//! an independent validator (`pyspdxtools` from PyPI's spdx-tools).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use kiln_attest::sbom::{self, spdx, Ecosystem, ScanOptions};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn names(scan: &sbom::Scan, eco: Ecosystem) -> BTreeSet<(String, String)> {
    scan.packages
        .iter()
        .filter(|p| p.ecosystem == eco)
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect()
}

/// A root holding this machine's dpkg database (status and every `*.list`).
fn dpkg_fixture(root: &Path) {
    let info = root.join("var/lib/dpkg/info");
    fs::create_dir_all(&info).expect("mkdir");
    fs::copy("/var/lib/dpkg/status", root.join("var/lib/dpkg/status")).expect("copy status");
    for e in fs::read_dir("/var/lib/dpkg/info").expect("read info") {
        let e = e.expect("entry");
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".list") {
            fs::copy(e.path(), info.join(&name)).expect("copy list");
        }
    }
    fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .expect("os-release");
}

#[test]
fn dpkg_packages_equal_dpkg_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    dpkg_fixture(dir.path());
    // dpkg-query itself, on the fixture's database: every package whose files are
    // on disk (not `not-installed`/`config-files`).
    let out = run(Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            dir.path().join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${db:Status-Status} ${Package} ${Version}\\n"]));
    let want: BTreeSet<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (st, n, v) = (w.next()?, w.next()?, w.next()?);
            (st != "not-installed" && st != "config-files").then(|| (n.to_string(), v.to_string()))
        })
        .collect();
    assert!(
        want.len() > 20,
        "the machine has a dpkg database: {}",
        want.len()
    );
    let scan = sbom::scan(dir.path(), &ScanOptions::default()).expect("scan");
    assert_eq!(names(&scan, Ecosystem::Deb), want);
    let dpkg = scan
        .packages
        .iter()
        .find(|p| p.name == "dpkg")
        .expect("dpkg is installed");
    assert!(
        dpkg.purl.starts_with("pkg:deb/debian/dpkg@"),
        "{}",
        dpkg.purl
    );
    assert!(dpkg.purl.contains("distro=debian-12"), "{}", dpkg.purl);
    assert!(dpkg.files.contains(&"/usr/bin/dpkg-query".to_string()));
    // Directories of the .list are not files.
    assert!(!dpkg.files.contains(&"/usr/bin".to_string()));
}

#[test]
fn debian_copyright_licences_are_spdx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("var/lib/dpkg")).expect("mkdir");
    fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: tool\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: amd64\n\n",
    )
    .expect("status");
    fs::create_dir_all(root.join("usr/share/doc/tool")).expect("mkdir");
    fs::write(
        root.join("usr/share/doc/tool/copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
         Files: *\nCopyright: someone\nLicense: GPL-2+\n\n\
         Files: lib/*\nCopyright: other\nLicense: Expat\n\n\
         License: GPL-2+\n On Debian systems the full text is in /usr/share/common-licenses.\n",
    )
    .expect("copyright");
    let scan = sbom::scan(root, &ScanOptions::default()).expect("scan");
    assert_eq!(scan.packages.len(), 1);
    assert_eq!(
        scan.packages[0].license.as_deref(),
        Some("GPL-2.0-or-later AND MIT")
    );
}

#[test]
fn python_packages_equal_pip_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let site = root.join("usr/lib/python3/dist-packages");
    run(Command::new("python3")
        .args(["-m", "pip", "install", "-q", "--no-deps", "--target"])
        .arg(&site)
        .arg("six==1.16.0"));
    let venv = root.join("opt/venv");
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    let mut want = BTreeSet::new();
    for path in [site.clone(), venv.join("lib/python3.11/site-packages")] {
        let json = run(Command::new("python3")
            .args(["-m", "pip", "list", "--format", "json", "--path"])
            .arg(&path));
        let list: serde_json::Value = serde_json::from_str(&json).expect("pip list json");
        for p in list.as_array().expect("array") {
            want.insert((
                p["name"].as_str().expect("name").to_string(),
                p["version"].as_str().expect("version").to_string(),
            ));
        }
    }
    assert!(want.iter().any(|(n, _)| n == "six"), "{want:?}");
    assert!(want.iter().any(|(n, _)| n == "pip"), "{want:?}");
    let scan = sbom::scan(root, &ScanOptions::default()).expect("scan");
    assert_eq!(names(&scan, Ecosystem::Python), want);
    let six = scan.packages.iter().find(|p| p.name == "six").expect("six");
    assert_eq!(six.purl, "pkg:pypi/six@1.16.0");
    assert_eq!(six.license.as_deref(), Some("MIT"));
    assert!(
        six.files
            .contains(&"/usr/lib/python3/dist-packages/six.py".to_string()),
        "{:?}",
        six.files
    );
    let d = scan
        .files
        .get("/usr/lib/python3/dist-packages/six.py")
        .expect("six.py hashed");
    let bytes = fs::read(site.join("six.py")).expect("read six.py");
    use sha2::Digest as _;
    assert_eq!(d.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
}

#[test]
fn cargo_lock_packages_equal_tomllib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("src/app")).expect("mkdir");
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    fs::copy(&lock, root.join("src/app/Cargo.lock")).expect("copy Cargo.lock");
    let out = run(Command::new("python3").args([
        "-c",
        "import sys,tomllib\nfor p in tomllib.load(open(sys.argv[1],'rb'))['package']: print(p['name'], p['version'])",
    ]).arg(&lock));
    let want: BTreeSet<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert!(want.len() > 50);
    let scan = sbom::scan(root, &ScanOptions::default()).expect("scan");
    assert_eq!(names(&scan, Ecosystem::Cargo), want);
    assert!(scan
        .packages
        .iter()
        .any(|p| p.purl == format!("pkg:cargo/kiln-attest@{}", env!("CARGO_PKG_VERSION"))));
}

/// npm fixtures written by hand (no npm here): a lockfileVersion 3 lock and the
/// installed manifests it describes.
#[test]
fn npm_lock_and_node_modules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    fs::create_dir_all(app.join("node_modules/@types/node")).expect("mkdir");
    fs::create_dir_all(app.join("node_modules/left-pad")).expect("mkdir");
    fs::write(
        app.join("package-lock.json"),
        r#"{"name":"app","version":"1.0.0","lockfileVersion":3,"packages":{
            "":{"name":"app","version":"1.0.0"},
            "node_modules/left-pad":{"version":"1.3.0","license":"WTFPL"},
            "node_modules/@types/node":{"version":"20.1.0","license":"MIT"},
            "node_modules/linked":{"resolved":"../linked","link":true}}}"#,
    )
    .expect("lock");
    fs::write(
        app.join("node_modules/left-pad/package.json"),
        r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL","author":"azer"}"#,
    )
    .expect("manifest");
    fs::write(
        app.join("node_modules/@types/node/package.json"),
        r#"{"name":"@types/node","version":"20.1.0","licenses":[{"type":"MIT"}]}"#,
    )
    .expect("manifest");
    let scan = sbom::scan(dir.path(), &ScanOptions::default()).expect("scan");
    let purls: Vec<&str> = scan
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Npm)
        .map(|p| p.purl.as_str())
        .collect();
    assert_eq!(
        purls,
        vec![
            "pkg:npm/%40types/node@20.1.0",
            "pkg:npm/app@1.0.0",
            "pkg:npm/left-pad@1.3.0"
        ]
    );
    let lp = scan
        .packages
        .iter()
        .find(|p| p.name == "left-pad")
        .expect("left-pad");
    assert_eq!(
        lp.found_in.len(),
        2,
        "lock and node_modules: {:?}",
        lp.found_in
    );
    assert_eq!(lp.license.as_deref(), Some("WTFPL"));
}

/// A real ELF (a copy of this machine's `true`) given a synthetic `.go.buildinfo`
/// section in Go 1.18+'s inline form and a cargo-auditable `.dep-v0` section (no Go
/// toolchain here to build a real Go binary).
#[test]
fn go_build_info_and_cargo_auditable_in_elf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("usr/local/bin")).expect("mkdir");
    let sentinel = "0123456789abcdef";
    let modinfo = format!(
        "{sentinel}path\texample.com/tool\nmod\texample.com/tool\tv1.4.0\th1:a=\ndep\tgolang.org/x/sys\tv0.20.0\th1:b=\nbuild\t-compiler=gc\n{sentinel}"
    );
    let mut blob = b"\xff Go buildinf:".to_vec();
    blob.extend_from_slice(&[8, 2]);
    blob.resize(32, 0);
    for s in ["go1.22.3", modinfo.as_str()] {
        // uvarint length
        let mut n = s.len();
        while n >= 0x80 {
            blob.push((n as u8) | 0x80);
            n >>= 7;
        }
        blob.push(n as u8);
        blob.extend_from_slice(s.as_bytes());
    }
    fs::write(root.join("go.bin"), &blob).expect("blob");
    let audit = root.join("audit.bin");
    run(Command::new("python3")
        .args(["-c", "import sys,zlib,json\nopen(sys.argv[1],'wb').write(zlib.compress(json.dumps({'packages':[{'name':'serde','version':'1.0.200','source':'crates.io'}]}).encode()))"])
        .arg(&audit));
    let bin = root.join("usr/local/bin/tool");
    fs::copy("/usr/bin/true", &bin).expect("copy /usr/bin/true");
    run(Command::new("objcopy")
        .arg(format!(
            "--add-section=.go.buildinfo={}",
            root.join("go.bin").display()
        ))
        .arg(format!("--add-section=.dep-v0={}", audit.display()))
        .arg(&bin));
    let scan = sbom::scan(root, &ScanOptions::default()).expect("scan");
    let purls: BTreeSet<&str> = scan.packages.iter().map(|p| p.purl.as_str()).collect();
    for want in [
        "pkg:golang/stdlib@go1.22.3",
        "pkg:golang/example.com/tool@v1.4.0",
        "pkg:golang/golang.org/x/sys@v0.20.0",
        "pkg:cargo/serde@1.0.200",
    ] {
        assert!(purls.contains(want), "{want} in {purls:?}");
    }
}

#[test]
fn symlinked_database_outside_the_root_is_not_read() {
    let outside = tempfile::tempdir().expect("tempdir");
    fs::write(
        outside.path().join("status"),
        "Package: evil\nStatus: install ok installed\nVersion: 6.6.6\n\n",
    )
    .expect("status");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("var/lib")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), root.join("var/lib/dpkg")).expect("symlink");
    // And a relative one that climbs: it stays at the root.
    fs::create_dir_all(root.join("lib/apk")).expect("mkdir");
    let depth = outside.path().components().count() + 4;
    let climb = format!("{}{}", "../".repeat(depth), outside.path().display());
    std::os::unix::fs::symlink(&climb, root.join("lib/apk/db")).expect("symlink");
    fs::write(outside.path().join("installed"), "P:evil\nV:6.6.6\n\n").expect("installed");
    let scan = sbom::scan(root, &ScanOptions::default()).expect("scan");
    assert!(scan.packages.is_empty(), "{:?}", scan.packages);
}

#[test]
fn oversized_and_malformed_databases_are_notes_not_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("var/lib/dpkg/info")).expect("mkdir");
    // 100 MB status: over the 64 MiB cap, refused before reading.
    let f = fs::File::create(root.join("var/lib/dpkg/status")).expect("create");
    f.set_len(100 << 20).expect("grow");
    fs::create_dir_all(root.join("lib/apk/db")).expect("mkdir");
    fs::write(
        root.join("lib/apk/db/installed"),
        b"P:ok\nV:1.0\nL:MIT\n\nV:2.0\n\n\xff\xfe\x00garbage\n\nP:\xc3\x28\nV:\n\n",
    )
    .expect("installed");
    fs::create_dir_all(root.join("srv/node_modules/bad")).expect("mkdir");
    fs::write(
        root.join("srv/node_modules/bad/package.json"),
        "{\"name\": [",
    )
    .expect("json");
    fs::write(root.join("srv/Cargo.lock"), "[[package]]\nname = 1\n").expect("lock");
    let start = std::time::Instant::now();
    let scan = sbom::scan(root, &ScanOptions::default()).expect("scan");
    assert!(start.elapsed().as_secs() < 5);
    let purls: Vec<&str> = scan.packages.iter().map(|p| p.purl.as_str()).collect();
    assert_eq!(purls, vec!["pkg:apk/alpine/ok@1.0"]);
    let notes = scan.notes.join("\n");
    assert!(
        notes.contains("var/lib/dpkg/status: 104857600 bytes is over"),
        "{notes}"
    );
    assert!(notes.contains("package.json"), "{notes}");
    assert!(notes.contains("Cargo.lock"), "{notes}");
    assert!(notes.contains("without P: or V:"), "{notes}");
}

/// The document for a real dpkg database and a venv passes pyspdxtools' validation,
/// and is byte-identical for the same inputs.
#[test]
fn spdx_document_validates_and_is_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    dpkg_fixture(&root);
    run(Command::new("python3")
        .args(["-m", "pip", "install", "-q", "--no-deps", "--target"])
        .arg(root.join("usr/lib/python3/dist-packages"))
        .arg("six==1.16.0"));
    fs::create_dir_all(root.join("usr/share/doc/x")).expect("mkdir");
    let scan = sbom::scan(&root, &ScanOptions::default()).expect("scan");
    let info = spdx::DocumentInfo::new("registry.example/app:1", 1_700_000_000, "sha256:abc");
    let doc = spdx::document(&scan, &info).expect("document");
    let again = spdx::document(
        &sbom::scan(&root, &ScanOptions::default()).expect("scan"),
        &info,
    )
    .expect("document");
    assert_eq!(doc, again, "same inputs, same bytes");
    let other = spdx::document(
        &scan,
        &spdx::DocumentInfo::new("registry.example/app:1", 1_700_000_000, "sha256:def"),
    )
    .expect("document");
    assert_ne!(doc, other, "the seed changes the namespace");
    let v: serde_json::Value = serde_json::from_slice(&doc).expect("json");
    assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let path = dir.path().join("sbom.spdx.json");
    fs::write(&path, &doc).expect("write");
    // pyspdxtools from PyPI (spdx-tools); scripts/setup.sh installs it.
    let out = Command::new("pyspdxtools")
        .arg("-i")
        .arg(&path)
        .output()
        .expect("pyspdxtools (pip install spdx-tools) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "pyspdxtools rejected the document:\n{text}"
    );
    assert!(!text.to_lowercase().contains("validation"), "{text}");
}
