//! Loopback networking for tests: free ports, waiting until something
//! listens, and child processes (servers) killed when the test ends.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether something accepts connections on `addr` within `timeout`.
pub fn wait_for(addr: impl ToSocketAddrs + Copy, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to 5 s) until something accepts connections on loopback
/// `port`; returns either way (the test's next request then fails).
pub fn wait_for_port(port: u16) {
    wait_for(("127.0.0.1", port), Duration::from_secs(5));
}

/// A child process killed (and reaped) when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (silent) and waits up to 60 s until something listens on
/// loopback `port`; fails the test naming `what` otherwise.
pub fn start_server(cmd: &mut Command, port: u16, what: &str) -> Server {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{what} could not start ({e}); run {}",
                crate::tools::SETUP_SCRIPT
            )
        });
    let server = Server(child);
    assert!(
        wait_for(("127.0.0.1", port), Duration::from_secs(60)),
        "{what} did not listen on port {port}"
    );
    server
}
