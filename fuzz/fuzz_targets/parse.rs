//! Fuzz target: any bytes, read as (lossy) UTF-8, must parse or fail with a
//! located error, never panic; the same for `RUN --mount` values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = kiln_dockerfile::parse("Dockerfile", &text) {
        assert!(
            e.line >= 1 && e.column >= 1,
            "error without a location: {e:?}"
        );
        let _ = e.to_string();
    }
    let _ = kiln_dockerfile::mount::parse_mount(&text);
});
