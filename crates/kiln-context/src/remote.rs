//! Streaming remote context archives: http(s) tarballs and objects in S3,
//! Google Cloud Storage and Azure Blob Storage.
//!
//! The download runs on its own thread with a single-threaded tokio
//! runtime (so [`crate::open`] stays synchronous and is safe to call from
//! inside another runtime), and hands chunks to the caller through a
//! bounded channel: at most a few chunks are in memory at once, whatever
//! the archive's size. The caller reads them as a plain [`Read`].

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;
use url::Url;

use crate::{ContextError, ContextOptions};

/// Chunks in flight between the download thread and the reader.
const CHANNEL_DEPTH: usize = 8;

/// A remote archive to stream.
pub(crate) enum Remote {
    Http(Url),
    S3 {
        bucket: String,
        key: String,
    },
    Gcs {
        bucket: String,
        key: String,
    },
    Azure {
        account: Option<String>,
        container: String,
        blob: String,
    },
}

/// Why a remote (or tar file) context could not be fetched. Messages never
/// carry credentials: reqwest errors are kept without their URL (which may
/// hold some), and object_store's name the request URL and status only.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The tar file named as the context cannot be opened.
    #[error("{error}")]
    OpenTarFile { error: std::io::Error },
    #[error("starting the download runtime: {error}")]
    Runtime { error: std::io::Error },
    #[error("starting the download thread: {error}")]
    Thread { error: std::io::Error },
    #[error("the download stopped before it started")]
    Stopped,
    /// A `store_options` key the object store does not know.
    #[error("unknown object store option {key:?}")]
    UnknownOption { key: String },
    #[error("S3 endpoint {endpoint:?}: {error}")]
    S3Endpoint {
        endpoint: String,
        error: url::ParseError,
    },
    #[error("{}", store_reason(.error))]
    Store { error: object_store::Error },
    #[error("http client: {error}")]
    HttpClient { error: reqwest::Error },
    /// The request or the download failed (connect, TLS, dropped connection).
    #[error("{}", one_line(&reqwest_reason(.error)))]
    Http { error: reqwest::Error },
    #[error("HTTP {status}")]
    Status { status: reqwest::StatusCode },
}

impl FetchError {
    fn store(error: object_store::Error) -> Self {
        FetchError::Store { error }
    }

    /// `error` without its URL, which may carry credentials.
    fn http(error: reqwest::Error) -> Self {
        FetchError::Http {
            error: error.without_url(),
        }
    }
}

enum Msg {
    Chunk(Bytes),
    Failed(FetchError),
}

/// A [`Read`] over the chunks the download thread sends.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    current: Bytes,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Chunk(b)) => self.current = b,
                Some(Msg::Failed(reason)) => {
                    self.done = true;
                    return Err(std::io::Error::other(reason));
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        buf[..n].copy_from_slice(&chunk);
        Ok(n)
    }
}

pub(crate) fn fetch_error(display: &str, reason: FetchError) -> ContextError {
    ContextError::Fetch {
        location: display.to_string(),
        reason,
    }
}

/// Starts streaming `remote`; returns once the first response arrived (so a
/// missing object or a refused credential is reported here, not mid-read).
pub(crate) fn stream(
    remote: Remote,
    display: &str,
    opts: &ContextOptions,
) -> Result<ChannelReader, ContextError> {
    let (tx, rx) = mpsc::channel::<Msg>(CHANNEL_DEPTH);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), FetchError>>();
    let settings = Settings::from(opts);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| fetch_error(display, FetchError::Runtime { error }))?;
    std::thread::Builder::new()
        .name("kiln-context-fetch".into())
        .spawn(move || runtime.block_on(download(remote, settings, tx, ready_tx)))
        .map_err(|error| fetch_error(display, FetchError::Thread { error }))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(ChannelReader {
            rx,
            current: Bytes::new(),
            done: false,
        }),
        Ok(Err(reason)) => Err(fetch_error(display, reason)),
        Err(_) => Err(fetch_error(display, FetchError::Stopped)),
    }
}

/// The parts of [`ContextOptions`] the download thread needs, owned.
struct Settings {
    s3_endpoint: Option<String>,
    s3_force_path_style: bool,
    store_options: BTreeMap<String, String>,
}

impl From<&ContextOptions> for Settings {
    fn from(o: &ContextOptions) -> Self {
        let env_endpoint = std::env::var("S3_ENDPOINT").ok().filter(|s| !s.is_empty());
        let env_path_style = std::env::var("S3_FORCE_PATH_STYLE")
            .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
            .unwrap_or(false);
        Settings {
            s3_endpoint: o.s3_endpoint.clone().or(env_endpoint),
            s3_force_path_style: o.s3_force_path_style || env_path_style,
            store_options: o.store_options.clone(),
        }
    }
}

type Stream = futures_util::stream::BoxStream<'static, Result<Bytes, FetchError>>;

async fn download(
    remote: Remote,
    settings: Settings,
    tx: mpsc::Sender<Msg>,
    ready: std::sync::mpsc::Sender<Result<(), FetchError>>,
) {
    let mut stream = match start(remote, &settings).await {
        Ok(s) => s,
        Err(reason) => {
            let _ = ready.send(Err(reason));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(b) => Msg::Chunk(b),
            Err(reason) => Msg::Failed(reason),
        };
        let failed = matches!(msg, Msg::Failed(_));
        if tx.send(msg).await.is_err() || failed {
            // The reader is gone (extraction failed) or the stream broke.
            return;
        }
    }
}

async fn start(remote: Remote, settings: &Settings) -> Result<Stream, FetchError> {
    match remote {
        Remote::Http(url) => start_http(url).await,
        Remote::S3 { bucket, key } => {
            let store = s3_store(&bucket, settings).await?;
            start_object(store, &key).await
        }
        Remote::Gcs { bucket, key } => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket);
            for (k, v) in &settings.store_options {
                let key: GoogleConfigKey = k.parse().map_err(|_| unknown_option(k))?;
                b = b.with_config(key, v);
            }
            let store = b.build().map_err(FetchError::store)?;
            start_object(Arc::new(store), &key).await
        }
        Remote::Azure {
            account,
            container,
            blob,
        } => {
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&container);
            if let Some(account) = &account {
                b = b.with_account(account);
            }
            // The variable Kaniko reads for the account key.
            if let Ok(key) = std::env::var("AZURE_STORAGE_ACCESS_KEY") {
                b = b.with_access_key(key);
            }
            for (k, v) in &settings.store_options {
                let key: AzureConfigKey = k.parse().map_err(|_| unknown_option(k))?;
                b = b.with_config(key, v);
            }
            let store = b.build().map_err(FetchError::store)?;
            start_object(Arc::new(store), &blob).await
        }
    }
}

fn unknown_option(key: &str) -> FetchError {
    FetchError::UnknownOption {
        key: key.to_string(),
    }
}

fn s3_endpoint(endpoint: &str) -> impl FnOnce(url::ParseError) -> FetchError + '_ {
    move |error| FetchError::S3Endpoint {
        endpoint: endpoint.to_string(),
        error,
    }
}

async fn s3_store(bucket: &str, settings: &Settings) -> Result<Arc<dyn ObjectStore>, FetchError> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &settings.s3_endpoint {
        let mut url = Url::parse(endpoint).map_err(s3_endpoint(endpoint))?;
        if url.scheme() == "http" {
            b = b.with_allow_http(true);
        }
        if settings.s3_force_path_style {
            b = b.with_endpoint(endpoint.trim_end_matches('/'));
        } else {
            // Virtual-hosted style: the bucket is part of the host name, as
            // S3 clients do unless path style is forced.
            let host = url.host_str().unwrap_or_default().to_string();
            url.set_host(Some(&format!("{bucket}.{host}")))
                .map_err(s3_endpoint(endpoint))?;
            b = b
                .with_endpoint(url.as_str().trim_end_matches('/'))
                .with_virtual_hosted_style_request(true);
        }
    }
    for (k, v) in &settings.store_options {
        let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown_option(k))?;
        b = b.with_config(key, v);
    }
    let has_region = b.get_config_value(&AmazonS3ConfigKey::Region).is_some()
        || b.get_config_value(&AmazonS3ConfigKey::DefaultRegion)
            .is_some();
    if !has_region {
        if settings.s3_endpoint.is_none() {
            // Like the AWS CLI, find the bucket's region instead of
            // requiring it to be configured.
            let region = object_store::aws::resolve_bucket_region(bucket, &Default::default())
                .await
                .map_err(FetchError::store)?;
            b = b.with_region(region);
        } else {
            b = b.with_region("us-east-1");
        }
    }
    Ok(Arc::new(b.build().map_err(FetchError::store)?))
}

async fn start_object(store: Arc<dyn ObjectStore>, key: &str) -> Result<Stream, FetchError> {
    let path = object_store::path::Path::from(key);
    let result = store.get(&path).await.map_err(FetchError::store)?;
    Ok(result
        .into_stream()
        .map(|r| r.map_err(FetchError::store))
        .boxed())
}

/// A one-line reason for an object store error. object_store's messages
/// carry the request URL and status, never credentials.
fn store_reason(e: &object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => {
            let text = e.to_string();
            if text.contains("NoSuchBucket") {
                "bucket not found".to_string()
            } else if text.contains("ContainerNotFound") {
                "container not found".to_string()
            } else {
                "object not found".to_string()
            }
        }
        other => one_line(&other.to_string()),
    }
}

fn one_line(s: &str) -> String {
    let line = s.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    if line.len() > 400 {
        let cut = (0..=400)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}…", &line[..cut])
    } else {
        line
    }
}

async fn start_http(url: Url) -> Result<Stream, FetchError> {
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|error| FetchError::HttpClient { error })?;
    let response = client.get(url).send().await.map_err(FetchError::http)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status { status });
    }
    Ok(response
        .bytes_stream()
        .map(|r| r.map_err(FetchError::http))
        .boxed())
}

/// reqwest's error text with its causes, without the URL (which the
/// caller names already, redacted).
fn reqwest_reason(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        msg = format!("{msg}: {inner}");
        cur = inner.source();
    }
    match e.url() {
        Some(u) => msg
            .replace(&format!(" for url ({u})"), "")
            .replace(&format!(" ({u})"), "")
            .replace(u.as_str(), "<url>"),
        None => msg,
    }
}
