//! A certificate authority made for one test with `openssl`, and the
//! server and client certificates it issues. Files live in the directory
//! the test gives (`ca.key`, `ca.crt`, then `NAME.key` and the certificate
//! file named by the caller); keys are unencrypted RSA 2048, valid two
//! days.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools;

/// The extensions of a server certificate for `127.0.0.1`.
pub const SERVER_IP_EXT: &str =
    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
/// The extensions of a server certificate for `localhost`.
pub const SERVER_LOCALHOST_EXT: &str =
    "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
/// The extensions of a client certificate.
pub const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

/// Runs `openssl args` in `dir`, failing the test on an error.
pub fn openssl(dir: &Path, args: &[&str]) {
    tools::run_cmd(Command::new("openssl").current_dir(dir).args(args));
}

/// A CA in a directory: `ca.key` and `ca.crt`.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Makes a self-signed CA named `cn` in `dir` (created if missing).
    pub fn new(dir: &Path, cn: &str) -> TestCa {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        );
        TestCa {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory holding the CA and what it issued.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues a certificate for a fresh key `NAME.key` with `subject` and
    /// the extensions `ext` (an openssl extfile), written to `out` in the
    /// CA's directory; returns (certificate, key).
    pub fn issue(&self, name: &str, subject: &str, ext: &str, out: &str) -> (PathBuf, PathBuf) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let extfile = format!("{name}.ext");
        openssl(
            &self.dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                subject,
            ],
        );
        std::fs::write(self.dir.join(&extfile), ext).expect("extfile");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                out,
                "-extfile",
                &extfile,
            ],
        );
        (self.dir.join(out), self.dir.join(key))
    }

    /// A server certificate for `127.0.0.1` (`srv.crt`, `srv.key`).
    pub fn server_for_loopback_ip(&self) -> (PathBuf, PathBuf) {
        self.issue("srv", "/CN=127.0.0.1", SERVER_IP_EXT, "srv.crt")
    }

    /// A server certificate for `localhost` (`srv.crt`, `srv.key`).
    pub fn server_for_localhost(&self) -> (PathBuf, PathBuf) {
        self.issue("srv", "/CN=localhost", SERVER_LOCALHOST_EXT, "srv.crt")
    }

    /// A client certificate named `cn` (`client.cert`, `client.key`: the
    /// names Docker's and skopeo's certificate directories use).
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue("client", &format!("/CN={cn}"), CLIENT_EXT, "client.cert")
    }
}
