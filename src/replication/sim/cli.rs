//! The command line of the simulators' examples (`simulate`, `simulate_promotion`):
//! `--flag N` pairs, of which `--seeds` and `--start` choose the seeds and the others set
//! the simulator's own configuration; and the command that replays one seed.

use std::fmt::Write;
use std::ops::Range;
use std::process::ExitCode;

/// The seeds a command line asked for, and the configuration to run them with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeds<C> {
    /// How many seeds to run (`--seeds`, 1000 unless given).
    pub seeds: u64,
    /// The first seed (`--start`, 0 unless given).
    pub start: u64,
    /// The default configuration as the other flags changed it.
    pub config: C,
}

impl<C: Default> Seeds<C> {
    /// Reads `words` (the arguments after the program's name) as `--flag N` pairs: the
    /// seeds here, every other flag through `flag`, which returns whether it knows it.
    ///
    /// # Errors
    /// A flag without a value, a value that is not a number, or a flag nobody knows.
    pub fn parse(
        words: impl IntoIterator<Item = String>,
        mut flag: impl FnMut(&mut C, &str, u64) -> bool,
    ) -> Result<Self, String> {
        let mut args = Self {
            seeds: 1_000,
            start: 0,
            config: C::default(),
        };
        let mut words = words.into_iter();
        while let Some(name) = words.next() {
            let value = words
                .next()
                .ok_or_else(|| format!("{name} needs a value"))?;
            let number: u64 = value
                .parse()
                .map_err(|_| format!("{name} wants a number, got {value:?}"))?;
            match name.as_str() {
                "--seeds" => args.seeds = number,
                "--start" => args.start = number,
                _ if flag(&mut args.config, &name, number) => {}
                _ => return Err(format!("unknown flag {name}")),
            }
        }
        Ok(args)
    }

    /// [`parse`](Self::parse) on this process's arguments, then `check` on the
    /// configuration.
    ///
    /// # Errors
    /// Exit code 2, once the problem and `usage` are printed to stderr.
    pub fn from_args(
        usage: &str,
        flag: impl FnMut(&mut C, &str, u64) -> bool,
        check: impl FnOnce(&C) -> Result<(), String>,
    ) -> Result<Self, ExitCode> {
        Self::parse(std::env::args().skip(1), flag)
            .and_then(|args| check(&args.config).map(|()| args))
            .map_err(|problem| {
                eprintln!("{problem}\n{usage}");
                ExitCode::from(2)
            })
    }
}

impl<C> Seeds<C> {
    /// The seeds to run, in order.
    #[must_use]
    pub fn range(&self) -> Range<u64> {
        self.start..self.start + self.seeds
    }
}

/// The command that replays `seed` with the example `example`, its configuration given
/// as `(flag without dashes, value)` pairs.
pub(crate) fn replay_command(example: &str, seed: u64, flags: &[(&str, u64)]) -> String {
    let mut command = format!(
        "cargo run --release --no-default-features --example {example} -- --seeds 1 \
         --start {seed}"
    );
    for (flag, value) in flags {
        // Writing to a String cannot fail.
        let _ = write!(command, " --{flag} {value}");
    }
    command
}
