//! Log lines that peers cause, at a rate: a port scanned or fuzzed by thousands of
//! connections writes a line a second, saying how many it left out, instead of one per
//! connection (what was refused is counted where it is reported: the primary's status).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per this long.
const EVERY: Duration = Duration::from_secs(1);

/// When a kind of line was last written, and how many were left out since.
#[derive(Debug, Default)]
pub struct Rated {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Rated {
    /// Whether a line may be written at `now`: `Some` with the number of lines left out
    /// since the last one written, or `None` (this one is left out, and counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, skipped) = &mut *state;
        if last.is_some_and(|last| now.saturating_duration_since(last) < EVERY) {
            *skipped += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_says_how_many_it_left_out() {
        let rated = Rated::default();
        let start = Instant::now();
        assert_eq!(rated.admit(start), Some(0));
        for ms in 1..=999 {
            assert_eq!(rated.admit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(rated.admit(start + EVERY), Some(999));
        assert_eq!(rated.admit(start + EVERY + Duration::from_millis(1)), None);
        assert_eq!(rated.admit(start + EVERY * 5), Some(1));
    }
}
