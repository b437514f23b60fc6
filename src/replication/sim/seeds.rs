//! What the tests of both simulators share: how many seeds to run, running them all,
//! finding the first that breaks a promise, and checking that a seed replays exactly.

use std::fmt::{Debug, Display};
use std::ops::Range;

use super::report::Failure;

/// Seeds a test runs: `REPLIKV_SIM_SEEDS` if set, else `ci`.
pub fn seeds(ci: u64) -> u64 {
    std::env::var("REPLIKV_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ci)
}

/// Runs every seed of `seeds`, handing each report to `tally`; panics with the first
/// failure (which names the command that replays it).
pub fn all_pass<R, F: Display>(
    seeds: Range<u64>,
    run: impl Fn(u64) -> Result<R, F>,
    mut tally: impl FnMut(R),
) {
    for seed in seeds {
        tally(run(seed).unwrap_or_else(|failure| panic!("{failure}")));
    }
}

/// The failure of the first seed below `within` that fails: a planted bug must be caught
/// within it, and must break one of the promises `broken`.
pub fn caught<R, I: PartialEq + Display>(
    within: u64,
    run: impl Fn(u64) -> Result<R, Failure<I>>,
    broken: &[I],
) -> Failure<I> {
    let failure = (0..within)
        .find_map(|seed| run(seed).err())
        .expect("the planted bug is caught within the seeds");
    assert!(broken.contains(&failure.invariant), "{failure}");
    failure
}

/// Asserts that each kind of event (a field of `$sum`) happened: a simulator that injects
/// nothing proves nothing.
macro_rules! every_kind_struck {
    ($sum:expr; $($kind:ident),+ $(,)?) => {
        for (kind, count) in [$((stringify!($kind), $sum.$kind)),+] {
            assert!(count > 0, "no {kind} in {:?}", $sum);
        }
    };
}
pub(super) use every_kind_struck;

/// Adds each field of `$more` named to the same field of `$sum`.
macro_rules! add_up {
    ($sum:expr, $more:expr; $($field:ident),+ $(,)?) => {
        $($sum.$field += $more.$field;)+
    };
}
pub(super) use add_up;

/// Seeds 0 to 2 of `config` run twice to equal reports, and the trace hash (`hash`) tells
/// seeds 0 and 1 apart.
pub fn replays_exactly<C, R: PartialEq + Debug, F: Debug>(
    config: &C,
    run: impl Fn(u64, &C) -> Result<R, F>,
    hash: impl Fn(&R) -> u64,
) {
    let passes = |seed| run(seed, config).expect("passes");
    for seed in [0, 1, 2] {
        assert_eq!(passes(seed), passes(seed));
    }
    assert_ne!(
        hash(&passes(0)),
        hash(&passes(1)),
        "the trace hash tells runs apart"
    );
}
