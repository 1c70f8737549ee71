//! ADD from http(s) URLs: downloads a URL to a file, streaming to disk and
//! hashing (sha256) while it streams, and reports the size, the
//! `Last-Modified` time and the file name the URL implies.
//!
//! The client is reqwest with rustls and honours `HTTPS_PROXY`/`HTTP_PROXY`/
//! `NO_PROXY`. Callers are synchronous (the COPY engine runs on ordinary
//! threads): [`HttpFetcher::fetch`] blocks on the runtime handle it was given
//! and must not be called from inside an async task.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Why a download failed; each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("creating the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{url}: invalid URL")]
    InvalidUrl { url: String },
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: writing {path}: {source}")]
    Write {
        url: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Lowercase hex sha256 of the body.
    pub sha256: String,
    pub size: u64,
    /// `Last-Modified`, seconds since the epoch.
    pub last_modified: Option<i64>,
    /// The last segment of the URL path (percent-decoded), or
    /// `__unnamed__` when the path has none, as Docker's builder names it.
    pub file_name: String,
}

/// An HTTP(S) client bound to a tokio runtime.
#[derive(Clone)]
pub struct HttpFetcher {
    /// Made at the first download: building a client loads the system's CA
    /// certificates, which most builds never need.
    client: std::sync::OnceLock<reqwest::Client>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetcher").finish_non_exhaustive()
    }
}

impl HttpFetcher {
    pub fn new(handle: tokio::runtime::Handle) -> Result<Self, FetchError> {
        Ok(HttpFetcher {
            client: std::sync::OnceLock::new(),
            handle,
        })
    }

    fn client(&self) -> Result<reqwest::Client, FetchError> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let made = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(FetchError::Client)?;
        Ok(self.client.get_or_init(|| made).clone())
    }

    /// Downloads `url` into `dest_file` (created or truncated).
    pub fn fetch(&self, url: &str, dest_file: &Path) -> Result<Fetched, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::InvalidUrl {
            url: url.to_string(),
        })?;
        let file_name = file_name_of(&parsed);
        let client = self.client()?;
        self.handle.block_on(async {
            let request_err = |source| FetchError::Request {
                url: url.to_string(),
                source,
            };
            let resp = client
                .get(parsed.clone())
                .send()
                .await
                .map_err(request_err)?;
            let status = resp.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                });
            }
            let last_modified = resp
                .headers()
                .get(reqwest::header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| httpdate::parse_http_date(s).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            let write_err = |source| FetchError::Write {
                url: url.to_string(),
                path: dest_file.to_path_buf(),
                source,
            };
            let mut file = tokio::fs::File::create(dest_file)
                .await
                .map_err(write_err)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| FetchError::Request {
                    url: url.to_string(),
                    source,
                })?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(write_err)?;
            }
            file.flush().await.map_err(write_err)?;
            file.sync_all().await.map_err(write_err)?;
            Ok(Fetched {
                sha256: hex::encode(hasher.finalize()),
                size,
                last_modified,
                file_name,
            })
        })
    }
}

fn file_name_of(url: &reqwest::Url) -> String {
    // Like Go's path.Base: trailing slashes do not count.
    let last = url
        .path_segments()
        .and_then(|mut s| s.rfind(|seg| !seg.is_empty()))
        .unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(last)
        .decode_utf8_lossy()
        .into_owned();
    if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
        "__unnamed__".to_string()
    } else {
        decoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(u: &str) -> String {
        match reqwest::Url::parse(u) {
            Ok(u) => file_name_of(&u),
            Err(e) => panic!("{u}: {e}"),
        }
    }

    #[test]
    fn names_from_urls() {
        assert_eq!(name("https://h/a/b/tool.tar.gz"), "tool.tar.gz");
        assert_eq!(name("https://h/a/b/tool.tar.gz?x=1#f"), "tool.tar.gz");
        assert_eq!(name("https://h/my%20file.txt"), "my file.txt");
        assert_eq!(name("https://h/"), "__unnamed__");
        assert_eq!(name("https://h"), "__unnamed__");
        assert_eq!(name("https://h/dir/"), "dir");
    }
}
