//! Opening a layer blob as a tar stream: decompression chosen by the blob's magic
//! bytes ([`crate::Compressed`]), run on a thread of its own a few chunks ahead of the
//! reader, and the bound on tar metadata records ([`crate::tarlimit`]) in front.

use std::io::{self, BufRead, BufReader, Read};

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::store::BlobStore;

/// Opens a layer blob with decompression chosen by its magic bytes.
pub(crate) fn open_layer(store: &BlobStore, layer: &Digest) -> Result<Box<dyn Read>> {
    let f = store.open_blob(layer)?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let head = r.fill_buf().ctx(|| format!("read layer {layer}"))?;
    let stream: Box<dyn Read> = match crate::Compressed::sniff(head) {
        crate::Compressed::None => Box::new(r),
        kind => {
            let d = kind
                .decoder(r)
                .ctx(|| format!("open compressed layer {layer}"))?;
            read_ahead(Box::new(d)).ctx(|| format!("decompress layer {layer}"))?
        }
    };
    // Metadata records (PAX, GNU long names) are read whole by the tar
    // reader: bound them before it sees them.
    Ok(Box::new(crate::tarlimit::MetaLimit::new(stream)))
}

/// How far [`read_ahead`] decompresses ahead of its reader.
const AHEAD_CHUNK: usize = 256 * 1024;
const AHEAD_CHUNKS: usize = 8;

/// Decompresses `inner` on a thread of its own, a few chunks ahead of the
/// reader: extracting a layer is bound by file creation and decompressing
/// it by CPU, so the two overlap on a second core. (Written here: it is a
/// channel and a loop; the crates that offer it bring an async runtime.)
fn read_ahead(mut inner: Box<dyn Read + Send>) -> io::Result<Box<dyn Read>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(AHEAD_CHUNKS);
    std::thread::Builder::new()
        .name("kiln-inflate".into())
        .spawn(move || loop {
            let mut chunk = vec![0u8; AHEAD_CHUNK];
            let mut filled = 0;
            while filled < chunk.len() {
                match inner.read(&mut chunk[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            chunk.truncate(filled);
            let end = filled == 0;
            // An empty chunk marks the end; a reader that went away (an
            // extraction that failed) ends the thread.
            if tx.send(Ok(chunk)).is_err() || end {
                return;
            }
        })?;
    Ok(Box::new(ReadAhead {
        rx,
        chunk: Vec::new(),
        pos: 0,
        ended: false,
        failed: false,
    }))
}

/// The reading end of [`read_ahead`].
struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    /// The end mark came.
    ended: bool,
    /// Decompressing failed: every read fails from then on.
    failed: bool,
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.failed {
                return Err(io::Error::other("the layer could not be decompressed"));
            }
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                // Gone without the end mark: never a silent truncation.
                Err(_) => {
                    self.failed = true;
                    return Err(io::Error::other("the layer decompressor stopped"));
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("compress");
        enc.finish().expect("compress")
    }

    /// Bytes that do not repeat, across `chunks` read-ahead chunks and a
    /// part of one.
    fn sample(chunks: usize) -> Vec<u8> {
        (0..(chunks * AHEAD_CHUNK + 12345) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn read_ahead_yields_the_whole_stream_in_order() {
        let data = sample(3);
        let z = gzip(&data);
        let mut r =
            read_ahead(Box::new(flate2::read::GzDecoder::new(io::Cursor::new(z)))).expect("thread");
        let mut out = Vec::new();
        // Odd-sized reads cross the chunk boundaries.
        let mut buf = [0u8; 7777];
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out.len(), data.len());
        assert!(out == data, "the stream came out changed");
        assert_eq!(r.read(&mut buf).expect("read after the end"), 0);
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_short_read() {
        let data = sample(3);
        let z = gzip(&data);
        let cut = z[..z.len() / 2].to_vec();
        let mut r = read_ahead(Box::new(flate2::read::GzDecoder::new(io::Cursor::new(cut))))
            .expect("thread");
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).expect_err("a cut stream must fail");
        assert!(out.len() < data.len());
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        // And it keeps failing: a second read does not look like the end.
        assert!(r.read(&mut [0u8; 16]).is_err());
    }

    /// A source that reports when the decompressing thread drops it.
    struct Watched<R>(R, std::sync::mpsc::Sender<()>);
    impl<R: Read> Read for Watched<R> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl<R> Drop for Watched<R> {
        fn drop(&mut self) {
            let _ = self.1.send(());
        }
    }

    #[test]
    fn a_reader_that_stops_early_lets_the_thread_end() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // A stream without end: only the reader going away stops the thread.
        let src = Watched(io::repeat(7), done_tx);
        let mut r = read_ahead(Box::new(src)).expect("thread");
        let mut first = [0u8; 10];
        r.read_exact(&mut first).expect("read");
        assert_eq!(first, [7u8; 10]);
        drop(r);
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the decompressing thread ended");
    }

    #[test]
    fn a_thread_that_dies_is_an_error_not_the_end() {
        /// Gives a few bytes, then panics.
        struct Dies(usize);
        impl Read for Dies {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    panic!("decoder bug");
                }
                let n = b.len().min(self.0);
                b[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = read_ahead(Box::new(Dies(1000))).expect("thread");
        let mut out = Vec::new();
        let err = r
            .read_to_end(&mut out)
            .expect_err("a dead thread must fail the read");
        assert!(err.to_string().contains("stopped"), "{err}");
        assert!(r.read(&mut [0u8; 4]).is_err());
    }
}
