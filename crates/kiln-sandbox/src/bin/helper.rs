//! Test helper: plays the sandbox init for this crate's tests (kiln's own
//! binary does it in production), and `run SPEC.json RESULT.json` runs a spec
//! so tests can start a run as another (unprivileged) user.

use std::process::ExitCode;

fn main() -> ExitCode {
    kiln_sandbox::maybe_run_init();
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, cmd, spec, result] if cmd == "run" => match run(spec, result) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        [_, cmd] if cmd == "probe" => {
            match kiln_sandbox::Sandbox::with_init("/proc/self/exe").probe() {
                Ok((iso, why)) => {
                    println!("{iso}: {why}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: kiln-sandbox-helper run SPEC.json RESULT.json | probe");
            ExitCode::from(2)
        }
    }
}

fn run(spec: &str, result: &str) -> Result<(), Box<dyn std::error::Error>> {
    let spec: kiln_sandbox::RunSpec = serde_json::from_slice(&std::fs::read(spec)?)?;
    let mut out = std::io::stdout();
    let r = kiln_sandbox::Sandbox::with_init("/proc/self/exe").run(&spec, &mut out)?;
    let json = serde_json::json!({
        "exit_code": r.exit_code,
        "tail": r.tail,
        "isolation": r.isolation.to_string(),
        "id_map": r.id_map,
    });
    std::fs::write(result, serde_json::to_vec(&json)?)?;
    Ok(())
}
