//! What a world of either simulator holds besides its cluster: the seed and the
//! configuration it runs, the timing drawn first from the seed, the randomness that
//! follows, and the events scheduled.

use super::clock::{SimRng, Timeline};

/// A run's seed, configuration `C`, timing `P` and schedule of events `E`.
pub(crate) struct Seeded<C, P, E> {
    pub seed: u64,
    pub config: C,
    pub params: P,
    pub rng: SimRng,
    pub timeline: Timeline<E>,
}

impl<C, P, E> Seeded<C, P, E> {
    /// A run of `config` from `seed`, whose timing `draw` picks before anything else.
    pub fn new(seed: u64, config: C, draw: impl FnOnce(&mut SimRng) -> P) -> Self {
        let mut rng = SimRng::new(seed);
        let params = draw(&mut rng);
        Self {
            seed,
            config,
            params,
            rng,
            timeline: Timeline::new(),
        }
    }
}
