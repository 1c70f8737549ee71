//! A fault-injecting HTTP/1.1 proxy in front of a test registry: forwards each request
//! on a fresh connection (`Connection: close`), and lets a test make chosen requests
//! fail with a status, fail with 429 + `Retry-After`, lose the connection before an
//! answer, or have their response cut off half-way; or fail a share of all requests
//! at random (seeded), never the same request more than twice in a row.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What to do to a request.
#[derive(Clone, Debug)]
pub enum Fault {
    Status(u16),
    TooManyRequests { retry_after: u32 },
    DropBeforeResponse,
    CutResponseHalfway,
}

/// A fault applied once to the first request whose method equals `method` and whose
/// path contains `path_part`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path_part: &'static str,
    pub fault: Fault,
}

/// Random faults: each request fails with probability `percent`% (a random kind of
/// fault), except that a request (method and path) that just failed twice in a row
/// goes through.
pub struct RandomFaults {
    percent: u64,
    state: u64,
    streak: std::collections::HashMap<(String, String), u32>,
    /// Requests failed so far, and requests seen.
    pub injected: u64,
    pub seen: u64,
}

impl RandomFaults {
    pub fn new(percent: u64, seed: u64) -> RandomFaults {
        RandomFaults {
            percent,
            state: seed,
            streak: Default::default(),
            injected: 0,
            seen: 0,
        }
    }

    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick(&mut self, method: &str, path: &str) -> Option<Fault> {
        self.seen += 1;
        // Upload locations carry a fresh session id each time: key by the path
        // without its query.
        let key = (
            method.to_string(),
            path.split('?').next().unwrap_or_default().to_string(),
        );
        let hit = self.next() % 100 < self.percent;
        let streak = self.streak.entry(key).or_insert(0);
        if !hit || *streak >= 2 {
            *streak = 0;
            return None;
        }
        *streak += 1;
        self.injected += 1;
        Some(match self.next() % 5 {
            0 => Fault::Status(500),
            1 => Fault::Status(503),
            2 => Fault::TooManyRequests { retry_after: 0 },
            3 => Fault::DropBeforeResponse,
            _ => Fault::CutResponseHalfway,
        })
    }
}

pub struct Proxy {
    pub addr: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// Random faults, when started with [`Proxy::start_random`].
    pub random: Arc<Mutex<Option<RandomFaults>>>,
    /// (method, path, what happened) for every request seen.
    pub log: Arc<Mutex<Vec<(String, String, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

impl Proxy {
    /// A proxy failing `percent`% of requests at random (see [`RandomFaults`]).
    pub fn start_random(upstream: &str, percent: u64, seed: u64) -> Proxy {
        let p = Proxy::start(upstream, Vec::new());
        *p.random.lock().unwrap() = Some(RandomFaults::new(percent, seed));
        p
    }

    pub fn start(upstream: &str, rules: Vec<Rule>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let rules = Arc::new(Mutex::new(rules));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let random: Arc<Mutex<Option<RandomFaults>>> = Arc::default();
        let (r2, l2, s2, up, rnd2) = (
            rules.clone(),
            log.clone(),
            stop.clone(),
            upstream.to_string(),
            random.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r3, l3, up, rnd3) = (r2.clone(), l2.clone(), up.clone(), rnd2.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &up, &r3, &l3, &rnd3);
                });
            }
        });
        Proxy {
            addr,
            rules,
            random,
            log,
            stop,
        }
    }

    /// Rules that have not fired yet.
    pub fn pending(&self) -> Vec<Rule> {
        self.rules.lock().unwrap().clone()
    }
}

fn handle(
    mut client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    log: &Mutex<Vec<(String, String, String)>>,
    random: &Mutex<Option<RandomFaults>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    // A TLS ClientHello (kiln probing for HTTPS): this proxy speaks plain HTTP only.
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 1 && first[0] == 0x16 {
        return client.shutdown(Shutdown::Both);
    }
    let mut reader = BufReader::new(client.try_clone()?);
    // One request per connection: the response always says `Connection: close`.
    let mut head = String::new();
    reader.read_line(&mut head)?;
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim_end().is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        headers.push(h);
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let fault = {
        let mut rs = rules.lock().unwrap();
        let i = rs
            .iter()
            .position(|r| r.method == method && path.contains(r.path_part));
        i.map(|i| rs.remove(i).fault).or_else(|| {
            random
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|r| r.pick(&method, &path))
        })
    };
    let note = |what: String| {
        log.lock()
            .unwrap()
            .push((method.clone(), path.clone(), what))
    };
    match &fault {
        Some(Fault::Status(s)) => {
            note(format!("fault {s}"));
            write!(
                client,
                "HTTP/1.1 {s} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some(Fault::TooManyRequests { retry_after }) => {
            note("fault 429".into());
            write!(client, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Some(Fault::DropBeforeResponse) => {
            note("fault drop".into());
            client.shutdown(Shutdown::Both)?;
            return Ok(());
        }
        _ => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    write!(up, "{head}")?;
    for h in &headers {
        write!(up, "{h}")?;
    }
    write!(up, "Connection: close\r\n\r\n")?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let status = String::from_utf8_lossy(resp.get(9..12).unwrap_or_default()).to_string();
    if let Some(Fault::CutResponseHalfway) = fault {
        note(format!("{status} cut"));
        let half = resp.len() / 2;
        client.write_all(resp.get(..half).unwrap_or_default())?;
        client.shutdown(Shutdown::Both)?;
        return Ok(());
    }
    note(status);
    client.write_all(&resp)?;
    Ok(())
}
