//! Transfer progress reporting: bytes done per blob, and what was skipped.

use kiln_image::Digest;

/// Why a blob was not transferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Pull: the blob is already in the local content store.
    InLocalStore,
    /// Push: the registry already has the blob in the destination repository.
    ExistsInRegistry,
    /// Push: the registry mounted the blob from another repository of its own.
    Mounted { from: String },
}

/// Receives transfer events. Callbacks run on the transferring task, so they must be
/// quick; they may be called from several blobs' transfers interleaved. Rates are the
/// caller's to compute (bytes over time between calls).
pub trait TransferProgress: Send + Sync {
    /// A blob transfer starts (`total` bytes).
    fn started(&self, _digest: &Digest, _total: u64) {}
    /// `done` of `total` bytes of a blob have been transferred so far. After a retry,
    /// `done` may go back.
    fn advanced(&self, _digest: &Digest, _done: u64, _total: u64) {}
    /// A blob is complete and verified.
    fn finished(&self, _digest: &Digest, _total: u64) {}
    /// A blob did not need to be transferred.
    fn skipped(&self, _digest: &Digest, _size: u64, _why: &SkipReason) {}
}

/// A [`TransferProgress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl TransferProgress for NoProgress {}
