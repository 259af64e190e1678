//! Property tests ("fuzzing") for adapters and dataset readers, driven by `proptest`: arbitrary
//! and mutated inputs, split into arbitrary reads, must never panic and must give the same
//! events whatever the read boundaries. Enabled by this crate's `fuzz` feature, which a plugin
//! turns on for its tests only:
//!
//! ```toml
//! [dev-dependencies]
//! llmb-plugin-sdk = { workspace = true, features = ["fuzz"] }
//! ```
//!
//! ```ignore
//! #[test]
//! fn fuzz() {
//!     llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[TRANSCRIPT, BODY]);
//! }
//! ```
//!
//! Each property runs [`DEFAULT_CASES`] cases from a fixed seed, so CI runs are reproducible;
//! `PROPTEST_CASES=N` runs N instead, from a new seed every run (a longer hunt:
//! `PROPTEST_CASES=20000 cargo test -p my-adapter fuzz`; `PROPTEST_RNG_SEED` fixes the seed).
//! A failure panics with the smallest failing input proptest found, bytes shown escaped.

use std::fmt;

pub use proptest;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

mod adapters;
mod corpus;
mod datasets;
mod mutate;
#[cfg(test)]
mod tests;

pub use adapters::adapter;
pub use datasets::{contents, options, reader};

/// Cases per property when `PROPTEST_CASES` is not set: enough to find shallow bugs on every
/// CI run while keeping a crate's properties to a few seconds.
pub const DEFAULT_CASES: u32 = 128;

/// `PROPTEST_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The runner configuration of these properties: [`cases`], no regression files, and a fixed
/// seed unless `PROPTEST_RNG_SEED` or `PROPTEST_CASES` is set, so the short runs of CI are
/// reproducible while a long hunt explores new inputs on every run.
pub fn config(default_cases: u32) -> Config {
    let base = Config::default();
    let hunting = std::env::var_os("PROPTEST_CASES").is_some();
    let rng_seed = if std::env::var_os("PROPTEST_RNG_SEED").is_some() || hunting {
        base.rng_seed
    } else {
        RngSeed::Fixed(0x11b_f022)
    };
    Config {
        cases: cases(default_cases),
        failure_persistence: None,
        rng_seed,
        ..base
    }
}

/// Bytes shown as an escaped byte string in failure reports.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// `bytes` cut at the positions `cuts` pick (sorted, repeats dropped): the reads of one body.
pub fn split<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for cut in at {
        out.push(&bytes[start..cut]);
        start = cut;
    }
    out.push(&bytes[start..]);
    out
}

/// Runs one property with [`config`]`(default_cases)`; panics naming the property and the
/// smallest failing input.
pub fn check<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: fmt::Debug,
{
    let mut runner = TestRunner::new(config(default_cases));
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => {
            panic!("property {name:?} failed: {why}\nsmallest failing input: {input:#?}")
        }
        Err(TestError::Abort(why)) => panic!("property {name:?} aborted: {why}"),
    }
}
