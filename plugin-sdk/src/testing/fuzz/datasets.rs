//! Properties of dataset readers: [`reader`] over mutated files ([`contents`]) and [`options`]
//! with odd values.

use proptest::prelude::*;
use serde_json::Value;

use super::corpus::keys_of;
use super::mutate::Mutator;
use super::{Bytes, DEFAULT_CASES, check};
use crate::SplitMix64;
use crate::dataset::DatasetParams;

/// The line count of a dataset file, for readers' error checks.
fn lines(content: &[u8]) -> u64 {
    content.iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

/// Arbitrary file contents for a dataset reader: random bytes, or a seed file changed byte by
/// byte, line by line or (for JSON and JSON Lines) value by value.
fn file_content(seeds: &[&[u8]], seed: u64) -> Vec<u8> {
    let donors: Vec<Value> = seeds
        .iter()
        .flat_map(|s| {
            let whole = serde_json::from_slice::<Value>(s).ok();
            let lines = s
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice::<Value>(l).ok());
            whole.into_iter().chain(lines)
        })
        .collect();
    let mut keys = Vec::new();
    donors.iter().for_each(|v| keys_of(v, &mut keys));
    keys.sort();
    keys.dedup();
    let mut m = Mutator {
        rng: SplitMix64::new(seed),
        donors: &donors,
        keys: &keys,
    };
    let Some(&file) = seeds.get(m.below(seeds.len())) else {
        return Vec::new();
    };
    let rounds = 1 + m.below(4);
    match m.below(4) {
        // Whole-file JSON (an array, an object).
        0 if serde_json::from_slice::<Value>(file).is_ok() => m.payload(file, false),
        // Line by line: change some lines, drop, repeat or swap others.
        0 | 1 => {
            let mut lines: Vec<Vec<u8>> = file.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            for _ in 0..rounds {
                let i = m.below(lines.len());
                match m.below(5) {
                    0 => {
                        lines.remove(i);
                    }
                    1 => {
                        let line = lines[i].clone();
                        lines.insert(i, line);
                    }
                    2 => {
                        let j = m.below(lines.len());
                        lines.swap(i, j);
                    }
                    _ => lines[i] = m.payload(&lines[i], false),
                }
                if lines.is_empty() {
                    break;
                }
            }
            lines.join(&b'\n')
        }
        _ => {
            let mut out = file.to_vec();
            for _ in 0..rounds {
                m.bytes(&mut out);
            }
            out
        }
    }
}

/// Arbitrary file contents for a dataset reader: random bytes, or (more often) one of `seeds`
/// changed byte by byte, line by line or, for JSON and JSON Lines, value by value.
pub fn contents(seeds: &[&[u8]]) -> impl Strategy<Value = Bytes> + use<> {
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes),
        4 => any::<u64>().prop_map(move |seed| {
            let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
            Bytes(file_content(&seeds, seed))
        }),
    ]
}

/// Fuzzes a dataset reader's input parsing: `read` runs the reader over a file of the given
/// contents named `name` (natively, as its tests do) and returns its error, if any. Checks: no
/// panic; an error names the file, and any `name:LINE` in it is a line of the file. `seeds`
/// are sample files of the format; most contents are mutations of them ([`contents`]).
pub fn reader(name: &str, seeds: &[&[u8]], read: impl Fn(&[u8]) -> Result<(), String>) {
    check(
        "dataset reader: any file, no panic, errors name the file and line",
        DEFAULT_CASES,
        contents(seeds),
        |content| {
            let Err(e) = read(&content.0) else {
                return Ok(());
            };
            prop_assert!(e.contains(name), "the error does not name {name}: {e}");
            let prefix = format!("{name}:");
            let last = lines(&content.0);
            for (at, _) in e.match_indices(&prefix) {
                let digits: String = e[at + prefix.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(line) = digits.parse::<u64>() {
                    prop_assert!(
                        (1..=last).contains(&line),
                        "line {line} of a {last}-line file: {e}"
                    );
                }
            }
            Ok(())
        },
    );
}

/// Fuzzes a reader's options: `open` reads `--dataset-opt` pairs giving some of `keys` odd
/// values (negative, fractional, huge, not numbers; never huge valid sizes, which a reader
/// rightly tries to honour), with any seed and a small count. Checks: no panic; an error names
/// one of the options it was given.
pub fn options(keys: &[&str], open: impl Fn(&DatasetParams) -> Result<(), String>) {
    let value = prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "2", "7", "16", "100", "-1", "-0", "1.5", "0.5", "0.99", "1e3", "nan", "inf",
            "-inf", "", " 3 ", "true", "false", "yes", "x", "4294967296",
            "18446744073709551616", "\u{0}",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,6}",
    ];
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    let pairs = prop::collection::vec((prop::sample::select(keys), value), 0..4);
    check(
        "dataset options: odd values, no panic, errors name the option",
        DEFAULT_CASES,
        (pairs, any::<u64>(), 0u64..40),
        |(pairs, seed, count)| {
            let options: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let params = crate::testing::dataset_params(seed, count, &options, &["data.txt"]);
            if let Err(e) = open(&params) {
                prop_assert!(
                    pairs.iter().any(|(k, _)| e.contains(&format!("--{k}"))),
                    "the error names none of the options given: {e}"
                );
            }
            Ok(())
        },
    );
}
