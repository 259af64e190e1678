//! Which files of a dataset snapshot a run reads: the data files of one split (and subset),
//! in path order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How a data file is parsed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    /// `.jsonl`, `.ndjson` and `.json`: the content tells JSON Lines from a JSON array.
    Json,
    /// `.csv` (comma) or `.tsv` (tab).
    Delimited(u8),
}

/// The extensions read, with their formats.
pub const EXTENSIONS: [(&str, Format); 6] = [
    (".parquet", Format::Parquet),
    (".jsonl", Format::Json),
    (".ndjson", Format::Json),
    (".json", Format::Json),
    (".csv", Format::Delimited(b',')),
    (".tsv", Format::Delimited(b'\t')),
];

/// Split names that mark a snapshot as split into files; one without any of them is all
/// `train`, as the `datasets` library reads it.
pub const SPLIT_KEYWORDS: [&str; 10] = [
    "train",
    "training",
    "validation",
    "valid",
    "val",
    "dev",
    "test",
    "testing",
    "eval",
    "evaluation",
];

/// JSON files `datasets` writes beside the data (`save_to_disk`, dataset cards): not records.
pub const METADATA_FILES: [&str; 4] = [
    "dataset_info.json",
    "dataset_infos.json",
    "dataset_dict.json",
    "state.json",
];

/// Folders deeper than this are not searched (a link loop would never end).
const MAX_DEPTH: usize = 16;

/// One file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Where it is opened.
    pub path: PathBuf,
    /// What errors call it: the user's path, plus the path inside a directory.
    pub name: String,
    pub format: Format,
}

fn extensions_list() -> String {
    EXTENSIONS
        .iter()
        .map(|(e, _)| *e)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The format and the name without its extension, for a file name the reader knows.
pub fn format_of(file_name: &str) -> Option<(Format, &str)> {
    let lower = file_name.to_ascii_lowercase();
    EXTENSIONS.iter().find_map(|(ext, format)| {
        lower
            .ends_with(ext)
            .then(|| (*format, &file_name[..file_name.len() - ext.len()]))
    })
}

fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

fn folders(rel: &str) -> impl Iterator<Item = &str> {
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    parts.into_iter()
}

fn stem(rel: &str) -> &str {
    let name = file_name(rel);
    format_of(name).map_or(name, |(_, stem)| stem)
}

/// The split a file's name gives, as listed when a split is not found: the name before a
/// `-00000-of-00002` shard suffix or a trailing shard number, or for a bare shard number
/// (`default/train/0000.parquet`) the folder it lies in.
pub fn split_name(rel: &str) -> String {
    let stem = stem(rel);
    let mut name = stem;
    if let Some(i) = stem.match_indices('-').map(|(i, _)| i).find(|&i| {
        let rest = &stem[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with("-of-")
    }) {
        name = &stem[..i];
    } else {
        loop {
            let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
            if trimmed.len() == name.len() {
                break;
            }
            match trimmed.strip_suffix(['-', '_', '.']) {
                Some(shorter) => name = shorter,
                None if trimmed.is_empty() => {
                    name = trimmed;
                    break;
                }
                None => break,
            }
        }
    }
    if name.is_empty() {
        return folders(rel).last().unwrap_or(stem).to_owned();
    }
    name.to_owned()
}

/// The rule for belonging to `split`: the file name (without extension) is the split or starts
/// with it and `-`, `_` or `.`, or the file lies in a folder named after it.
pub fn in_split(rel: &str, split: &str) -> bool {
    let stem = stem(rel);
    let named = stem == split
        || stem
            .strip_prefix(split)
            .is_some_and(|rest| rest.starts_with(['-', '_', '.']));
    named || folders(rel).any(|f| f == split)
}

/// Exactly `split`, so `train` does not also take `train_sft` when both are there.
fn exactly_split(rel: &str, split: &str) -> bool {
    split_name(rel) == split || folders(rel).any(|f| f == split)
}

/// The subset a file belongs to: its top-level folder, unless that is `data` or the split.
fn subset_of<'a>(rel: &'a str, split: &str) -> Option<&'a str> {
    let (top, _) = rel.split_once('/')?;
    (top != "data" && top != split).then_some(top)
}

/// What a directory holds: data files by path, and the extensions of the other files (to say
/// what was there when no data file is).
#[derive(Default)]
struct Found {
    data: Vec<String>,
    others: BTreeSet<String>,
}

fn walk(dir: &Path, rel: &str, depth: usize, found: &mut Found, shown: &str) -> Result<(), String> {
    let at = if rel.is_empty() {
        shown.to_owned()
    } else {
        format!("{shown}/{rel}")
    };
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{at}: cannot list: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{at}: cannot list: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || METADATA_FILES.contains(&name.as_str()) {
            continue;
        }
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("{shown}/{child}: cannot read: {e}"))?;
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, &child, depth + 1, found, shown)?;
            }
        } else if format_of(&name).is_some() {
            found.data.push(child);
        } else if let Some((_, ext)) = name.rsplit_once('.') {
            found
                .others
                .insert(format!(".{}", ext.to_ascii_lowercase()));
        }
    }
    Ok(())
}

fn join_set<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let set: BTreeSet<&str> = names.into_iter().collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}

/// The files to read for `entry` (a path inside `root`, `"."` for the whole of it): the file
/// itself, or the data files of `split` (and `subset`) of a directory, sorted by path.
pub fn locate(
    root: &Path,
    entry: &str,
    shown: &str,
    split: &str,
    subset: Option<&str>,
) -> Result<Vec<DataFile>, String> {
    let path = root.join(entry);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if !meta.is_dir() {
        let (format, _) = format_of(entry).ok_or_else(|| {
            format!(
                "{shown}: not a file type the hf dataset reads ({})",
                extensions_list()
            )
        })?;
        return Ok(vec![DataFile {
            path,
            name: shown.to_owned(),
            format,
        }]);
    }
    let shown = shown.trim_end_matches('/');
    let mut found = Found::default();
    walk(&path, "", 0, &mut found, shown)?;
    let mut all = found.data;
    all.sort();
    if all.is_empty() {
        let others = if found.others.is_empty() {
            String::new()
        } else {
            let list: Vec<&str> = found.others.iter().map(String::as_str).collect();
            format!(" (other files: {})", list.join(", "))
        };
        return Err(format!(
            "{shown}: no data files ({}) in the directory{others}",
            extensions_list()
        ));
    }
    if let Some(subset) = subset {
        let prefix = format!("{subset}/");
        let found: Vec<String> = all
            .iter()
            .filter(|f| f.starts_with(&prefix))
            .cloned()
            .collect();
        if found.is_empty() {
            let subsets = join_set(all.iter().filter_map(|f| f.split_once('/').map(|(t, _)| t)));
            return Err(format!(
                "{shown}: no subset {subset:?} (a top-level folder of data files); subsets found: {}",
                if subsets.is_empty() { "none" } else { &subsets }
            ));
        }
        all = found;
    }
    let strip = |f: &String| -> String {
        match subset {
            Some(s) => f[s.len() + 1..].to_owned(),
            None => f.clone(),
        }
    };
    let inner: Vec<String> = all.iter().map(strip).collect();
    let pick = |rule: &dyn Fn(&str, &str) -> bool| -> Vec<usize> {
        (0..inner.len())
            .filter(|&i| rule(&inner[i], split))
            .collect()
    };
    let mut chosen = pick(&exactly_split);
    if chosen.is_empty() {
        chosen = pick(&in_split);
    }
    if chosen.is_empty() {
        let names: Vec<String> = inner.iter().map(|f| split_name(f)).collect();
        let unsplit = !names.iter().any(|n| SPLIT_KEYWORDS.contains(&n.as_str()));
        if split == "train" && unsplit {
            chosen = (0..inner.len()).collect();
        } else {
            return Err(format!(
                "no files for split {split:?} under {shown}; splits found: {}",
                join_set(names.iter().map(String::as_str))
            ));
        }
    }
    if subset.is_none() {
        let subsets: BTreeSet<Option<&str>> = chosen
            .iter()
            .map(|&i| subset_of(&inner[i], split))
            .collect();
        if subsets.len() > 1 {
            return Err(format!(
                "{shown}: split {split:?} has files in several subsets: {}; pick one with --hf-subset",
                join_set(subsets.iter().map(|s| s.unwrap_or("(top level)")))
            ));
        }
    }
    Ok(chosen
        .into_iter()
        .map(|i| {
            let rel = &all[i];
            let (format, _) = format_of(file_name(rel)).expect("walk keeps known formats");
            DataFile {
                path: path.join(rel),
                name: format!("{shown}/{rel}"),
                format,
            }
        })
        .collect())
}
