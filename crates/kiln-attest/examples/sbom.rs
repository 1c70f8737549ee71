//! Scans a root filesystem and writes its SPDX document to stdout, timing the scan on
//! stderr: `cargo run -p kiln-attest --example sbom -- ROOT`.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use kiln_attest::sbom::{self, spdx, ScanOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args().nth(1).ok_or("usage: sbom ROOT")?;
    let start = Instant::now();
    let opts = ScanOptions {
        hash_files: std::env::var_os("NO_HASH").is_none(),
        ..ScanOptions::default()
    };
    let scan = sbom::scan(std::path::Path::new(&root), &opts)?;
    let scanned = start.elapsed();
    let doc = spdx::document(&scan, &spdx::DocumentInfo::new(root.as_str(), 0, "example"))?;
    eprintln!(
        "{} packages, {} files hashed, {} notes; scan {:?}, document {:?}, {} bytes",
        scan.packages.len(),
        scan.files.len(),
        scan.notes.len(),
        scanned,
        start.elapsed() - scanned,
        doc.len()
    );
    std::io::Write::write_all(&mut std::io::stdout(), &doc)?;
    Ok(())
}
