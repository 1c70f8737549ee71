//! HTTP servers for tests, on loopback only: [`TinyServer`], an in-process
//! HTTP/1.1 server (one request per connection) that answers with a handler
//! and records every request; and [`StaticServer`], python's `http.server`
//! serving a directory over http or https (with a [`TestCa`] certificate
//! for `localhost`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::net::{self, Server};
use crate::tls::TestCa;
use crate::tools;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }
}

/// One response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection: close`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The `Content-Length` to announce, if not the body's (a server that
    /// hangs up early).
    pub announce_length: Option<usize>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
            announce_length: None,
        }
    }

    /// `200 OK` with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Response {
        Response::new(200, body)
    }

    /// `404 Not Found`, empty.
    pub fn not_found() -> Response {
        Response::new(404, Vec::new())
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// The reason phrase of the statuses tests use.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "X",
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// An HTTP/1.1 server on a loopback port, answering every request with
/// the handler; runs until the test process ends.
pub struct TinyServer {
    pub addr: SocketAddr,
    /// Every request served, in order.
    pub seen: Arc<Mutex<Vec<Request>>>,
}

impl TinyServer {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> TinyServer {
        let handler: Arc<Handler> = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = serve(&mut conn, &*handler, &log);
            }
        });
        TinyServer { addr, seen }
    }

    /// Serves `files` (path → body) with `200 OK`; anything else is a 404.
    pub fn files(files: Vec<(String, Vec<u8>)>) -> TinyServer {
        TinyServer::start(move |r| {
            files
                .iter()
                .find(|(p, _)| p == r.path())
                .map_or_else(Response::not_found, |(_, body)| Response::ok(body.clone()))
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The requests served so far.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().expect("request log").clone()
    }
}

fn serve(
    conn: &mut TcpStream,
    handler: &Handler,
    seen: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let req = Request {
        method,
        target,
        headers,
        body,
    };
    let resp = handler(&req);
    seen.lock().expect("request log").push(req);
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.announce_length.unwrap_or(resp.body.len())
    ));
    conn.write_all(head.as_bytes())?;
    // Several writes, so the client sees many chunks.
    for chunk in resp.body.chunks(4096) {
        conn.write_all(chunk)?;
    }
    Ok(())
}

/// python's `http.server` serving a directory on a free loopback port;
/// stopped on drop.
pub struct StaticServer {
    _server: Server,
    pub port: u16,
    /// The CA that issued the https certificate (for `localhost`).
    pub ca: Option<PathBuf>,
}

/// An https `http.server`: argv port, directory, certificate, key.
const HTTPS_SERVER: &str = "import functools, http.server, ssl, sys\n\
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])\n\
    httpd = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), handler)\n\
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)\n\
    httpd.serve_forever()\n";

impl StaticServer {
    /// Serves `dir` over plain http.
    pub fn http(dir: &Path) -> StaticServer {
        tools::require("python3");
        let port = net::free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e}; {}", tools::missing("python3")));
        net::wait_for_port(port);
        StaticServer {
            _server: Server(child),
            port,
            ca: None,
        }
    }

    /// Serves `dir` over https for `localhost`, with a certificate from a CA
    /// made in `tls_dir` (see [`StaticServer::ca`]).
    pub fn https(dir: &Path, tls_dir: &Path) -> StaticServer {
        tools::require("python3");
        let ca = TestCa::new(tls_dir, "kiln e2e CA");
        let (crt, key) = ca.server_for_localhost();
        let port = net::free_port();
        let child = Command::new("python3")
            .args(["-c", HTTPS_SERVER, &port.to_string()])
            .arg(dir)
            .arg(crt)
            .arg(key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e}; {}", tools::missing("python3")));
        net::wait_for_port(port);
        StaticServer {
            _server: Server(child),
            port,
            ca: Some(ca.cert()),
        }
    }
}
