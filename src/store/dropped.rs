//! Writes the log had no room for, given back by the commit pipeline.
//!
//! A leader whose batch the log refuses before writing a byte of it
//! ([`crate::error::LogError::NotWritten`], a full disk) gives back the batch's LSNs and
//! those of every write queued behind it: the next write takes the first of them again, so
//! LSNs stay dense. Each of those writers hears the refusal once, from its own wait, and no
//! LSN is handed out again before all of them did (a writer that woke late must not take
//! the next write's entry for its own).
//!
//! A follower's entries keep their primary's LSNs: given back, they are simply not in its
//! log yet. Its one writer, the follow loop, hears the refusal from the wait of its call,
//! and its next link resumes from the log's end, where the primary sends them again.

use super::commit::Failure;

/// The writes a leader gave back, while some of their writers have not heard.
pub(super) struct Dropped {
    /// The first LSN given back.
    from: u64,
    /// Writers of LSNs given back that have not heard yet.
    unheard: usize,
    failure: Failure,
}

impl Dropped {
    /// `writers` writes from `from` on were not written, for `failure`.
    pub(super) fn new(from: u64, writers: usize, failure: Failure) -> Self {
        Self {
            from,
            unheard: writers,
            failure,
        }
    }

    /// Why new writes are refused until every writer heard.
    pub(super) fn failure(&self) -> &Failure {
        &self.failure
    }

    /// The refusal for the writer of `lsn` if its write was given back (it hears it once).
    pub(super) fn hear(&mut self, lsn: u64) -> Option<Failure> {
        if lsn < self.from {
            return None;
        }
        self.unheard = self.unheard.saturating_sub(1);
        Some(self.failure.clone())
    }

    /// Whether every writer of the writes given back heard.
    pub(super) fn all_heard(&self) -> bool {
        self.unheard == 0
    }
}
