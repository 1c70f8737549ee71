//! Telling how a tar stream is compressed from its first bytes, and reading
//! it decompressed: the one place where layer blobs, ADD archives and
//! context archives are sniffed and decoded (writing layers is
//! [`crate::Compression`]'s).

use std::io::{self, BufRead, Read};

/// How a tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressed {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compressed {
    /// How many leading bytes [`Compressed::sniff`] looks at.
    pub const SNIFF_LEN: usize = 6;

    /// Tells the compression from a stream's first bytes (at least
    /// [`Compressed::SNIFF_LEN`] of them when the stream has that many).
    pub fn sniff(head: &[u8]) -> Compressed {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compressed::Gzip
        } else if head.starts_with(b"BZh") {
            Compressed::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compressed::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compressed::Zstd
        } else {
            Compressed::None
        }
    }

    /// `input` decompressed (concatenated gzip, bzip2 and xz members are
    /// read as one stream, as `tar` does).
    pub fn decoder<R: BufRead>(self, input: R) -> io::Result<Decoder<R>> {
        Ok(match self {
            Compressed::None => Decoder::None(input),
            Compressed::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(input)),
            Compressed::Bzip2 => Decoder::Bzip2(bzip2::bufread::MultiBzDecoder::new(input)),
            Compressed::Xz => Decoder::Xz(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
            Compressed::Zstd => Decoder::Zstd(zstd::Decoder::with_buffer(input)?),
        })
    }
}

/// A stream read decompressed ([`Compressed::decoder`]); `Send` when the
/// input is.
pub enum Decoder<R: BufRead> {
    None(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Bzip2(bzip2::bufread::MultiBzDecoder<R>),
    Xz(liblzma::bufread::XzDecoder<R>),
    Zstd(zstd::Decoder<'static, R>),
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Bzip2(r) => r.read(buf),
            Decoder::Xz(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_kind_is_told_and_read_back() {
        let data = b"a tar stream, or anything".repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).expect("gz");
            e.finish().expect("gz")
        };
        let bz = {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&data).expect("bz");
            e.finish().expect("bz")
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).expect("xz");
            e.finish().expect("xz")
        };
        let zs = zstd::encode_all(&data[..], 1).expect("zstd");
        for (bytes, kind) in [
            (data.clone(), Compressed::None),
            (gz, Compressed::Gzip),
            (bz, Compressed::Bzip2),
            (xz, Compressed::Xz),
            (zs, Compressed::Zstd),
        ] {
            assert_eq!(Compressed::sniff(&bytes), kind);
            let mut out = Vec::new();
            kind.decoder(io::BufReader::new(&bytes[..]))
                .expect("decoder")
                .read_to_end(&mut out)
                .expect("read");
            assert!(out == data, "{kind:?}");
        }
        assert_eq!(Compressed::sniff(b"hello"), Compressed::None);
        assert_eq!(Compressed::sniff(b""), Compressed::None);
        assert_eq!(Compressed::sniff(&[0x1f]), Compressed::None);
    }
}
