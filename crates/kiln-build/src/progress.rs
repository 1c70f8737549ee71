//! Progress reporting: each step as it starts and ends, with its duration,
//! and a final summary.
//!
//! The build calls a [`Progress`] sink; the CLI picks the rendering
//! (`plain` lines for CI logs, `json` for machines). Output goes to stderr so
//! stdout stays free for results such as the image digest.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// How a finished step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    Cached,
    Failed,
}

/// Receives build events.
pub trait Progress: Send + Sync {
    /// A step begins. `id` is unique within the build.
    fn step_started(&self, id: usize, stage: &str, text: &str);
    /// A step ends.
    fn step_finished(&self, id: usize, outcome: StepOutcome, elapsed: Duration);
    /// A line of information about a step (bytes written, what was chosen).
    fn step_info(&self, id: usize, message: &str);
    /// A note not tied to one step.
    fn info(&self, message: &str);
}

/// Rendering of progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Plain,
    Json,
    Quiet,
}

/// Writes progress events to stderr.
pub struct StderrProgress {
    mode: ProgressMode,
    lock: Mutex<()>,
}

impl StderrProgress {
    pub fn new(mode: ProgressMode) -> Self {
        StderrProgress {
            mode,
            lock: Mutex::new(()),
        }
    }

    fn emit(&self, plain: String, json: serde_json::Value) {
        let _guard = self.lock.lock();
        let mut err = std::io::stderr().lock();
        let _ = match self.mode {
            ProgressMode::Plain => writeln!(err, "{plain}"),
            ProgressMode::Json => writeln!(err, "{json}"),
            ProgressMode::Quiet => Ok(()),
        };
    }
}

impl Progress for StderrProgress {
    fn step_started(&self, id: usize, stage: &str, text: &str) {
        self.emit(
            format!("#{id} [{stage}] {text}"),
            serde_json::json!({"event": "step-started", "id": id, "stage": stage, "text": text}),
        );
    }

    fn step_finished(&self, id: usize, outcome: StepOutcome, elapsed: Duration) {
        let word = match outcome {
            StepOutcome::Done => "DONE",
            StepOutcome::Cached => "CACHED",
            StepOutcome::Failed => "FAILED",
        };
        self.emit(
            format!("#{id} {word} {:.2}s", elapsed.as_secs_f64()),
            serde_json::json!({"event": "step-finished", "id": id, "outcome": word.to_ascii_lowercase(), "seconds": elapsed.as_secs_f64()}),
        );
    }

    fn step_info(&self, id: usize, message: &str) {
        self.emit(
            format!("#{id} {message}"),
            serde_json::json!({"event": "step-info", "id": id, "message": message}),
        );
    }

    fn info(&self, message: &str) {
        self.emit(
            message.to_string(),
            serde_json::json!({"event": "info", "message": message}),
        );
    }
}

/// `1.5 MB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
