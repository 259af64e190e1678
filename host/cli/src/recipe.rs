//! `llmb run recipe.toml`: a benchmark campaign in one file.
//!
//! `[bench]` takes every `llmb bench` option by its long name; `[matrix]` lists values that
//! expand as a cartesian product, and a list of tables sets several options together (an
//! input/output length pair, a concurrency/prompt-count pair). Strings may use `${VAR}` and
//! `${VAR:-default}` from the environment (`${RECIPE_DIR}` is the recipe's folder); an option
//! that expands to nothing is left out, so `base-url = "${BASE_URL:-}"` runs against the built-in
//! simulator when BASE_URL is unset. Each case gets a result file with a predictable name,
//! and the run ends with one aggregate CSV over all of them (and, with `html-report = true` at
//! the top, `llmb report` over the result folder).
//!
//! ```toml
//! [bench]
//! base-url = "${BASE_URL:-http://127.0.0.1:8000}"
//! dataset-name = "random"
//! ignore-eos = true
//!
//! [matrix]
//! lengths = [
//!   { random-input-len = 1024, random-output-len = 128 },
//!   { random-input-len = 128, random-output-len = 1024 },
//! ]
//! max-concurrency = [1, 8, 32]
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use toml::Value;

use crate::args::{BenchArgs, Cli, Command, RunArgs};

/// One expanded case: its place, a name for files, and the options it sets.
#[derive(Debug, Clone)]
pub struct Case {
    pub index: usize,
    /// `max-concurrency=8,random-input-len=1024`: what varies in this case.
    pub label: String,
    pub argv: Vec<String>,
    pub args: BenchArgs,
}

/// Reads a recipe and expands it into parsed cases, so every mistake (an unknown option, a bad
/// value, an unset variable) is reported before anything runs.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Vec<Case>> {
    let shown = path.display().to_string();
    let doc = read_doc(path)?;
    for key in doc.keys() {
        anyhow::ensure!(
            ["bench", "matrix", "html-report"].contains(&key.as_str()),
            "recipe {shown}: unknown section or key {key:?} (use [bench], [matrix] and \
             html-report = true)"
        );
    }
    let table = |name: &str| -> anyhow::Result<toml::Table> {
        match doc.get(name) {
            None => Ok(toml::Table::new()),
            Some(Value::Table(t)) => Ok(t.clone()),
            Some(_) => bail!("recipe {shown}: {name} must be a table ([{name}])"),
        }
    };
    let recipe_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .display()
        .to_string();
    let env = |name: &str| {
        if name == "RECIPE_DIR" {
            Some(recipe_dir.clone())
        } else {
            env(name)
        }
    };
    let env: &dyn Fn(&str) -> Option<String> = &env;
    let base = table("bench")?;
    let matrix = table("matrix")?;

    // Each matrix axis is a list of option sets; the cases are their cartesian product.
    let mut axes: Vec<Vec<(String, toml::Table)>> = Vec::new();
    for (axis, values) in &matrix {
        let Value::Array(values) = values else {
            bail!("recipe {shown}: matrix.{axis} must be a list of values");
        };
        anyhow::ensure!(!values.is_empty(), "recipe {shown}: matrix.{axis} is empty");
        let mut choices = Vec::new();
        for v in values {
            let (label, set) = match v {
                Value::Table(t) => (
                    t.iter()
                        .map(|(k, v)| format!("{k}={}", plain(v)))
                        .collect::<Vec<_>>()
                        .join(","),
                    t.clone(),
                ),
                other => {
                    let mut t = toml::Table::new();
                    t.insert(axis.clone(), other.clone());
                    (format!("{axis}={}", plain(other)), t)
                }
            };
            choices.push((label, set));
        }
        axes.push(choices);
    }
    let mut combos: Vec<Vec<(String, toml::Table)>> = vec![Vec::new()];
    for axis in &axes {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                axis.iter().map(move |choice| {
                    let mut c = combo.clone();
                    c.push(choice.clone());
                    c
                })
            })
            .collect();
    }

    let stem = path.file_stem().map_or_else(
        || "recipe".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    combos
        .into_iter()
        .enumerate()
        .map(|(i, combo)| {
            let index = i + 1;
            let label = combo
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let mut options = base.clone();
            for (_, set) in &combo {
                for (k, v) in set {
                    options.insert(k.clone(), v.clone());
                }
            }
            let at = if label.is_empty() {
                format!("recipe {shown}")
            } else {
                format!("recipe {shown}, case {index} ({label})")
            };
            let argv = to_argv(&options, env).with_context(|| at.clone())?;
            let cli = Cli::try_parse_from(
                ["llmb".to_string(), "bench".to_string()]
                    .into_iter()
                    .chain(argv.iter().cloned()),
            )
            .map_err(|e| anyhow::anyhow!("{at}: {}", e.to_string().trim_end()))?;
            let Command::Bench(mut args) = cli.command else {
                unreachable!("parsed as bench")
            };
            args.save_result = true;
            // An `llmb.lock` next to the recipe pins every case's plugins (`lock = ...` in
            // [bench] names another).
            if args.lock.is_none() {
                let beside = path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(llmb_registry::lock::FILE_NAME);
                args.lock = beside.exists().then_some(beside);
            }
            let name = format!("{stem}-{index:02}{}.json", slug(&label));
            args.result_filename = Some(match &args.result_filename {
                // Every case needs its own file, whatever the given name looks like.
                Some(given) => match given.strip_suffix(".json") {
                    Some(stem) => format!("{stem}-{index:02}.json"),
                    None => format!("{given}-{index:02}"),
                },
                None => name,
            });
            Ok(Case {
                index,
                label,
                argv,
                args: *args,
            })
        })
        .collect()
}

/// A value as it appears in a case's label.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Integer(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => other.type_str().to_string(),
    }
}

/// A value as the user wrote it, lists included (`[256, "x"]`).
fn written(v: &Value) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(written).collect::<Vec<_>>().join(", ")
        ),
        Value::String(s) => format!("{s:?}"),
        other => plain(other),
    }
}

/// `-max-concurrency8-random-input-len1024`, safe in a file name.
fn slug(label: &str) -> String {
    if label.is_empty() {
        return String::new();
    }
    let mut out = String::from("-");
    for c in label.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => out.push(c),
            ',' => out.push('_'),
            _ => {}
        }
    }
    out.truncate(120);
    out
}

/// `{key = value}` options to command-line words: `true` is the bare flag, `false` leaves it
/// out, a list repeats the flag (or gives a comma list for options that take one).
fn to_argv(
    options: &toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let mut argv = Vec::new();
    for (key, value) in options {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            Value::Boolean(true) => argv.push(flag),
            Value::Boolean(false) => {}
            Value::Array(items) => {
                for item in items {
                    argv.push(flag.clone());
                    argv.push(scalar(key, item, env)?);
                }
            }
            other => {
                let value = scalar(key, other, env)?;
                // `${BASE_URL:-}` with BASE_URL unset leaves the option out altogether.
                if !value.is_empty() {
                    argv.push(flag);
                    argv.push(value);
                }
            }
        }
    }
    Ok(argv)
}

fn scalar(key: &str, v: &Value, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    match v {
        Value::String(s) => substitute(s, env).with_context(|| format!("option {key}")),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => bail!(
            "option {key}: a {} is not an option value",
            other.type_str()
        ),
    }
}

/// `${VAR}` and `${VAR:-default}` from the environment; an unset variable without a default is
/// an error naming it.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = closing_brace(after).with_context(|| format!("unclosed ${{ in {text:?}"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        anyhow::ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad variable name {name:?} in {text:?}"
        );
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(&substitute(d, env)?),
            (None, None) => bail!(
                "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
            ),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where the `}` closing a `${` lies, defaults holding `${...}` of their own included.
fn closing_brace(after: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = after.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A recipe file as the TOML tree `load` expands: TOML, or YAML (`.yaml`/`.yml`, or a file of
/// another name that is not TOML), and a sweep config turned into `[bench]` and `[matrix]`.
fn read_doc(path: &Path) -> anyhow::Result<toml::Table> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("recipe {shown}: cannot read"))?;
    let what = format!("recipe {shown}");
    let doc = llmb_engine::yaml::parse_toml_or_yaml(path, &text, &what)?;
    if is_sweep_config(&doc) {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        return sweep_config(doc, &what, dir.unwrap_or(Path::new(".")));
    }
    Ok(doc)
}

/// A sweep config: no `[bench]`/`[matrix]`, and `input_output` or `concurrency_prompts` pairs.
fn is_sweep_config(doc: &toml::Table) -> bool {
    !doc.contains_key("bench")
        && !doc.contains_key("matrix")
        && (doc.contains_key("input_output") || doc.contains_key("concurrency_prompts"))
}

/// The sweep config of the vLLM sweep scripts llmb replaces, as a recipe:
///
/// ```yaml
/// model: meta-llama/Llama-3.1-8B-Instruct
/// base_url: http://127.0.0.1:8000
/// tokenizer: /models/llama              # a local path; a hub name is left to the server
/// input_output: [[256, 256], [512, 512]]      # random-input-len, random-output-len
/// concurrency_prompts: [[1, 10], [4, 40]]     # max-concurrency, num-prompts
/// ```
///
/// Every length pair runs with every concurrency pair (lengths outermost, as the scripts loop),
/// on the random dataset with ttft,tpot,itl,e2el percentiles; other top-level keys are `bench`
/// options (`base_url` is `--base-url`), and without `base_url` it runs against the simulator.
fn sweep_config(mut doc: toml::Table, what: &str, dir: &Path) -> anyhow::Result<toml::Table> {
    let mut recipe = toml::Table::new();
    for key in ["html-report", "html_report"] {
        if let Some(v) = doc.remove(key) {
            recipe.insert("html-report".into(), v);
        }
    }
    let mut matrix = toml::Table::new();
    // Axis names sort lengths first: the matrix expands in key order.
    for (key, axis, names) in [
        (
            "input_output",
            "1-input-output",
            ["random-input-len", "random-output-len"],
        ),
        (
            "concurrency_prompts",
            "2-concurrency-prompts",
            ["max-concurrency", "num-prompts"],
        ),
    ] {
        let Some(value) = doc.remove(key) else {
            continue;
        };
        let shape = format!("[{}, {}] pairs", names[0], names[1]);
        let Value::Array(items) = value else {
            bail!("{what}: {key} must be a list of {shape}, e.g. [[256, 256], [512, 512]]");
        };
        anyhow::ensure!(!items.is_empty(), "{what}: {key} is empty");
        let mut sets = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let pair = match item {
                Value::Array(p) => p
                    .iter()
                    .map(|v| v.as_integer().filter(|n| *n > 0))
                    .collect::<Option<Vec<i64>>>()
                    .filter(|p| p.len() == 2),
                _ => None,
            };
            let Some(pair) = pair else {
                bail!(
                    "{what}: {key} item {} must be a pair of positive integers ({shape}), got {}",
                    i + 1,
                    written(item)
                );
            };
            let mut set = toml::Table::new();
            for (name, n) in names.iter().zip(pair) {
                set.insert((*name).into(), Value::Integer(n));
            }
            sets.push(Value::Table(set));
        }
        matrix.insert(axis.into(), Value::Array(sets));
    }
    // The scripts hand `tokenizer` to vLLM, which downloads hub names; llmb reads local files
    // only, so a name that is no file here is left to the server's tokenize route.
    if let Some(Value::String(t)) = doc.get("tokenizer").cloned()
        && !t.contains("${")
        && !Path::new(&t).exists()
    {
        if dir.join(&t).exists() {
            let local = dir.join(&t).display().to_string();
            doc.insert("tokenizer".into(), Value::String(local));
        } else {
            eprintln!(
                "note: {what}: tokenizer {t:?} is not a local file or folder (llmb downloads \
                 nothing); input lengths come from the server's tokenize route instead"
            );
            doc.remove("tokenizer");
        }
    }
    let mut bench = toml::Table::new();
    bench.insert("dataset-name".into(), Value::String("random".into()));
    bench.insert(
        "percentile-metrics".into(),
        Value::String("ttft,tpot,itl,e2el".into()),
    );
    for (key, value) in doc {
        bench.insert(key.replace('_', "-"), value);
    }
    recipe.insert("bench".into(), Value::Table(bench));
    recipe.insert("matrix".into(), Value::Table(matrix));
    Ok(recipe)
}

/// Whether the recipe asks for `llmb report` over its result folder at the end
/// (`html-report = true` at the top).
pub fn wants_html_report(path: &Path) -> anyhow::Result<bool> {
    let doc = read_doc(path)?;
    match doc.get("html-report") {
        None => Ok(false),
        Some(Value::Boolean(b)) => Ok(*b),
        Some(_) => bail!(
            "recipe {}: html-report must be true or false",
            path.display()
        ),
    }
}

/// `llmb run`: every case in order (Ctrl-C stops after the current one), then the aggregate
/// table over the result files they wrote.
pub async fn run(args: &RunArgs) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let cases = load(&args.recipe, &env)?;
    if args.dry_run {
        for c in &cases {
            println!("# case {} {}", c.index, c.label);
            println!("llmb bench {}", shell_words(&redacted_argv(&c.argv)));
        }
        return Ok(());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nInterrupted: finishing the current case, skipping the rest");
            let _ = stop_tx.send(true);
        }
    });
    let mut results: Vec<PathBuf> = Vec::new();
    for case in &cases {
        if *stop_rx.borrow() {
            break;
        }
        eprintln!(
            "=== case {}/{}{}",
            case.index,
            cases.len(),
            if case.label.is_empty() {
                String::new()
            } else {
                format!(": {}", case.label)
            }
        );
        let stop = llmb_engine::lifecycle::Cancel::from(stop_rx.clone());
        results.extend(crate::campaign::run_case(&case.args, &stop).await?);
    }
    anyhow::ensure!(!results.is_empty(), "no case finished");
    let found = llmb_report::export::collect_results(&results)?;
    let dir = cases[0].args.result_dir.clone();
    let stem = args
        .recipe
        .file_stem()
        .map_or_else(|| "recipe".into(), |s| s.to_string_lossy().into_owned());
    let table = dir.join(format!("{stem}-aggregate.csv"));
    let mut file = std::fs::File::create(&table)
        .with_context(|| format!("cannot write {}", table.display()))?;
    llmb_report::export::aggregate_csv(&found, &mut file)?;
    println!(
        "{} results; aggregate table: {}",
        found.len(),
        table.display()
    );
    if wants_html_report(&args.recipe)? {
        crate::report::main(&crate::args::ReportArgs {
            dirs: vec![dir],
            indir: Vec::new(),
            output: None,
            runs: Vec::new(),
            max_timeline_requests: llmb_report::html::DEFAULT_TIMELINE_CAP,
        })?;
    }
    Ok(())
}

/// `argv` as it may be shown: API keys, secret header values and URL credentials masked.
fn redacted_argv(argv: &[String]) -> Vec<String> {
    use llmb_engine::secrets::{MASK, is_secret_header, redact_url};
    let mut out = Vec::with_capacity(argv.len());
    let mut flag: Option<&str> = None;
    for arg in argv {
        let shown = match flag {
            Some("--api-key") | Some("--secret-header") => match arg.split_once('=') {
                Some((k, _)) if flag == Some("--secret-header") => format!("{k}={MASK}"),
                _ => MASK.to_string(),
            },
            Some("--header") => match arg.split_once('=') {
                Some((k, _)) if is_secret_header(k.trim()) => format!("{k}={MASK}"),
                _ => arg.clone(),
            },
            _ if arg.contains("://") => redact_url(arg),
            _ => arg.clone(),
        };
        if arg.starts_with("--") {
            flag = Some(arg.as_str());
        } else if flag != Some("--header") && flag != Some("--secret-header") {
            flag = None;
        }
        out.push(shown);
    }
    out
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_take_the_environment_or_their_default() {
        let env = |name: &str| (name == "MODEL").then(|| "llama".to_string());
        assert_eq!(
            substitute("m=${MODEL} u=${URL:-http://x:1}/v1 ${MODEL:-no}", &env).unwrap(),
            "m=llama u=http://x:1/v1 llama"
        );
        let err = substitute("${NOPE}", &env).unwrap_err().to_string();
        assert!(err.contains("NOPE is not set"), "{err}");
        assert!(substitute("${OPEN", &env).is_err());
        assert_eq!(substitute("no vars $HOME", &env).unwrap(), "no vars $HOME");
        assert_eq!(
            substitute("${DATA:-${MODEL}/d.json}", &env).unwrap(),
            "llama/d.json"
        );
    }

    #[test]
    fn the_matrix_is_a_cartesian_product_with_pairs() {
        let dir = std::env::temp_dir().join(format!("llmb-recipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sweep.toml");
        std::fs::write(
            &path,
            r#"
[bench]
model = "${MODEL:-m}"
ignore-eos = true
disable-tqdm = false
goodput = ["ttft:200", "tpot:50"]

[matrix]
lengths = [
  { random-input-len = 1024, random-output-len = 128 },
  { random-input-len = 128, random-output-len = 1024 },
]
max-concurrency = [1, 8, 32]
"#,
        )
        .unwrap();
        let cases = load(&path, &|_| None).unwrap();
        assert_eq!(cases.len(), 6);
        let c = &cases[4];
        assert_eq!(c.args.random_input_len, 128);
        assert_eq!(c.args.random_output_len, 1024);
        assert_eq!(c.args.max_concurrency, Some(8));
        assert!(c.args.ignore_eos && c.args.save_result && !c.args.disable_tqdm);
        assert_eq!(c.args.goodput, vec!["ttft:200", "tpot:50"]);
        assert_eq!(c.args.model.as_deref(), Some("m"));
        assert_eq!(
            c.args.result_filename.as_deref(),
            Some("sweep-05-random-input-len128_random-output-len1024_max-concurrency8.json")
        );

        std::fs::write(
            &path,
            "[bench]\nresult-filename = \"run.json.out\"\n[matrix]\nseed = [1, 2]\n",
        )
        .unwrap();
        let names: Vec<_> = load(&path, &|_| None)
            .unwrap()
            .into_iter()
            .map(|c| c.args.result_filename.unwrap())
            .collect();
        assert_eq!(names, vec!["run.json.out-01", "run.json.out-02"]);

        std::fs::write(&path, "[bench]\nmax-concurency = 4\n").unwrap();
        let err = format!("{:#}", load(&path, &|_| None).unwrap_err());
        assert!(
            err.contains("sweep.toml") && err.contains("--max-concurency"),
            "{err}"
        );
        std::fs::write(&path, "[matrix]\nmax-concurrency = 4\n").unwrap();
        let err = format!("{:#}", load(&path, &|_| None).unwrap_err());
        assert!(
            err.contains("matrix.max-concurrency must be a list"),
            "{err}"
        );
        std::fs::write(&path, "[bench]\nmodel = \"${MODEL}\"\n").unwrap();
        let err = format!("{:#}", load(&path, &|_| None).unwrap_err());
        assert!(
            err.contains("option model") && err.contains("MODEL is not set"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
