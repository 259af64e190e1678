//! vLLM's multi-turn statistics: one [`RequestStats`] per successful request, and for each
//! `--warmup-percentages` value a summary (runtime, requests/s) plus a pandas-`describe()` table
//! (count, mean, std, min, percentiles, max) of every metric.

use serde::{Deserialize, Serialize};

/// The separator line vLLM's script prints between sections.
pub const TEXT_SEPARATOR: &str = "----------------------------------------------------------------------------------------------------";

/// One measured request, with vLLM's field names and order (the `--stats-json-output` objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    pub ttft_ms: f64,
    pub tpot_ms: f64,
    pub latency_ms: f64,
    /// When the request was sent, ms since the start of the command.
    pub start_time_ms: f64,
    /// Messages sent (the history plus the new user message).
    pub input_num_turns: u64,
    /// The server's prompt token count when it reports usage, else the tokenizer's count of the
    /// messages' contents.
    pub input_num_tokens: u64,
    pub output_num_tokens: u64,
    /// Streamed chunks after the first.
    pub output_num_chunks: u64,
    pub output_num_first_chunk_tokens: u64,
    /// Share of the prompt that is history (earlier turns), in percent.
    pub approx_cached_percent: f64,
    pub conversation_id: String,
    pub client_id: u64,
    /// The [`llmb_engine::records::RequestRecord`] this came from (not part of vLLM's output).
    #[serde(skip)]
    pub record_id: u64,
}

/// One metric's values; `None` is pandas' NaN (left out of every statistic).
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

impl Column {
    pub fn new(name: &str, values: Vec<Option<f64>>) -> Self {
        Self {
            name: name.into(),
            values,
        }
    }
}

/// pandas `describe()` of one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Described {
    pub name: String,
    pub count: f64,
    pub mean: Option<f64>,
    /// Sample standard deviation (n − 1), NaN for a single value, as pandas.
    pub std: Option<f64>,
    pub min: Option<f64>,
    /// At the table's percentiles, linear interpolation (numpy's default).
    pub percentiles: Vec<Option<f64>>,
    pub max: Option<f64>,
}

impl Described {
    pub fn of(col: &Column, pcts: &[f64]) -> Self {
        let mut v: Vec<f64> = col.values.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = (n > 0).then(|| v.iter().sum::<f64>() / n as f64);
        let std = (n > 1).then(|| {
            let m = mean.unwrap_or(0.0);
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        Self {
            name: col.name.clone(),
            count: n as f64,
            mean,
            std,
            min: v.first().copied(),
            percentiles: pcts.iter().map(|&q| quantile(&v, q)).collect(),
            max: v.last().copied(),
        }
    }

    /// The row in column order: count, mean, std, min, percentiles, max.
    pub fn cells(&self) -> Vec<Option<f64>> {
        let mut out = vec![Some(self.count), self.mean, self.std, self.min];
        out.extend(self.percentiles.iter().copied());
        out.push(self.max);
        out
    }
}

/// Linear-interpolated quantile of sorted values (numpy's default method).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let (a, b, t) = (sorted[lo], sorted[hi], h - lo as f64);
    // numpy's `_lerp`: interpolated from the nearer end.
    Some(if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    })
}

/// pandas' column label of a percentile: 25%, 99.9%.
pub fn percentile_label(q: f64) -> String {
    let p = format!("{:.4}", q * 100.0);
    let p = p.trim_end_matches('0').trim_end_matches('.');
    format!("{p}%")
}

/// The table's header: count, mean, std, min, the percentiles, max.
pub fn header(pcts: &[f64]) -> Vec<String> {
    let mut h: Vec<String> = ["count", "mean", "std", "min"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    h.extend(pcts.iter().map(|&q| percentile_label(q)));
    h.push("max".into());
    h
}

/// Percentiles in the table: 25, 50, 75, 90, and 99 / 99.9 / 99.99 once there are 100 / 1,000 /
/// 10,000 samples.
pub fn table_percentiles(samples: usize) -> Vec<f64> {
    let mut p = vec![0.25, 0.5, 0.75, 0.9];
    if samples >= 100 {
        p.push(0.99);
    }
    if samples >= 1000 {
        p.push(0.999);
    }
    if samples >= 10000 {
        p.push(0.9999);
    }
    p
}

/// The describe table as text, like pandas prints it with two decimals.
pub fn describe_table(cols: &[Column], pcts: &[f64]) -> String {
    let rows: Vec<Described> = cols.iter().map(|c| Described::of(c, pcts)).collect();
    render(&rows, pcts)
}

pub fn render(rows: &[Described], pcts: &[f64]) -> String {
    let head = header(pcts);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.cells()
                .iter()
                .enumerate()
                .map(|(i, c)| match c {
                    None => "NaN".to_string(),
                    Some(v) if i == 0 => format!("{v:.1}"),
                    Some(v) => format!("{v:.2}"),
                })
                .collect()
        })
        .collect();
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let widths: Vec<usize> = head
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain(std::iter::once(h.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{:name_w$}", "");
    for (h, w) in head.iter().zip(&widths) {
        out.push_str(&format!("  {h:>w$}"));
    }
    for (r, c) in rows.iter().zip(&cells) {
        out.push('\n');
        out.push_str(&format!("{:<name_w$}", r.name));
        for (v, w) in c.iter().zip(&widths) {
            out.push_str(&format!("  {v:>w$}"));
        }
    }
    out
}

/// The raw data as vLLM's script arranges it: sorted by start time, `end_time_ms` added, and
/// with `--verbose` the time between a conversation's user turns.
#[derive(Debug, Clone)]
pub struct RawData {
    pub rows: Vec<RequestStats>,
    /// Seconds since the same conversation's previous request (`None` for its first), when
    /// verbose.
    pub between_turns: Option<Vec<Option<f64>>>,
}

impl RawData {
    pub fn new(stats: &[RequestStats], verbose: bool) -> Self {
        let mut rows = stats.to_vec();
        rows.sort_by(|a, b| a.start_time_ms.total_cmp(&b.start_time_ms));
        let between_turns = verbose.then(|| {
            let mut last: std::collections::HashMap<&str, f64> = Default::default();
            rows.iter()
                .map(|r| {
                    let prev = last.insert(&r.conversation_id, r.start_time_ms);
                    prev.map(|p| (r.start_time_ms - p) / 1000.0)
                })
                .collect()
        });
        Self {
            rows,
            between_turns,
        }
    }

    pub fn end_time_ms(r: &RequestStats) -> f64 {
        r.start_time_ms + r.latency_ms
    }

    /// The columns summarised (vLLM drops the times, first-chunk tokens, the cached share and
    /// the ids), over rows `from..`.
    pub fn metric_columns(&self, from: usize) -> Vec<Column> {
        let rows = &self.rows[from..];
        let col = |name: &str, f: fn(&RequestStats) -> f64| {
            Column::new(name, rows.iter().map(|r| Some(f(r))).collect())
        };
        let mut cols = vec![
            col("ttft_ms", |r| r.ttft_ms),
            col("tpot_ms", |r| r.tpot_ms),
            col("latency_ms", |r| r.latency_ms),
            col("input_num_turns", |r| r.input_num_turns as f64),
            col("input_num_tokens", |r| r.input_num_tokens as f64),
            col("output_num_tokens", |r| r.output_num_tokens as f64),
            col("output_num_chunks", |r| r.output_num_chunks as f64),
        ];
        if let Some(b) = &self.between_turns {
            cols.push(Column::new(
                "time_between_user_turns_sec",
                b[from..].to_vec(),
            ));
        }
        cols
    }
}

/// One block of the report: the samples left after dropping a warmup share.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub warmup_percent: f64,
    /// `runtime_sec`, `requests_per_sec` and, after a warmup step, `warmup_runtime_sec` and
    /// `total_runtime_incl_warmup_sec`, in that order.
    pub params: Vec<(String, f64)>,
    pub percentiles: Vec<f64>,
    pub rows: Vec<Described>,
}

impl Summary {
    pub fn param(&self, name: &str) -> Option<f64> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    pub fn row(&self, name: &str) -> Option<&Described> {
        self.rows.iter().find(|r| r.name == name)
    }
}

/// vLLM's `process_statistics`: for each warmup share (ascending) the tail of the samples by
/// start time, the runtime from the first start to the last row's end, and the describe table.
pub fn summarise(raw: &RawData, warmup: &[f64], warmup_runtime_sec: Option<f64>) -> Vec<Summary> {
    let n = raw.rows.len();
    let pcts = table_percentiles(n);
    let mut out = Vec::new();
    for &p in warmup {
        let skip = (p * n as f64) as usize;
        if n - skip == 0 {
            break;
        }
        let tail = &raw.rows[skip..];
        let runtime_sec = (RawData::end_time_ms(tail.last().expect("non-empty"))
            - tail[0].start_time_ms)
            / 1000.0;
        let mut params = vec![
            ("runtime_sec".to_string(), runtime_sec),
            (
                "requests_per_sec".to_string(),
                tail.len() as f64 / runtime_sec,
            ),
        ];
        if let Some(w) = warmup_runtime_sec {
            params.push(("warmup_runtime_sec".into(), w));
            params.push(("total_runtime_incl_warmup_sec".into(), runtime_sec + w));
        }
        let rows = raw
            .metric_columns(skip)
            .iter()
            .map(|c| Described::of(c, &pcts))
            .collect();
        out.push(Summary {
            warmup_percent: p,
            params,
            percentiles: pcts.clone(),
            rows,
        });
    }
    out
}

/// Prints the parameters and every summary as vLLM's script does.
pub fn print_report(
    test_params: &[(String, String)],
    gen_params: Option<&[(String, String)]>,
    summaries: &[Summary],
    n_warmups: usize,
) {
    println!("{TEXT_SEPARATOR}");
    println!("Parameters:");
    for (k, v) in test_params {
        println!("{k}={v}");
    }
    if let Some(g) = gen_params {
        println!("Conversations Generation Parameters:");
        for (k, v) in g {
            println!("{k}={v}");
        }
    }
    println!("{TEXT_SEPARATOR}");
    for s in summaries {
        if s.warmup_percent > 0.0 || n_warmups > 1 {
            println!(
                "Statistics summary (assuming {:.0}% warmup samples):",
                s.warmup_percent * 100.0
            );
        } else {
            println!("Statistics summary:");
        }
        for (k, v) in &s.params {
            println!("{k} = {v:.3}");
        }
        println!("{TEXT_SEPARATOR}");
        println!("{}", render(&s.rows, &s.percentiles));
        println!("{TEXT_SEPARATOR}");
    }
}

/// `--stats-json-output`: the per-request stats in collection order, indented like Python's
/// `json.dump(indent=2)`.
pub fn write_json(path: &std::path::Path, stats: &[RequestStats]) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(stats)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_matches_pandas() {
        // pandas: pd.Series([1, 2, 3, 4, 10]).describe(percentiles=[.25, .5, .75, .9])
        let c = Column::new("x", [1.0, 2.0, 3.0, 4.0, 10.0].map(Some).to_vec());
        let d = Described::of(&c, &[0.25, 0.5, 0.75, 0.9]);
        assert_eq!(d.count, 5.0);
        assert_eq!(d.mean, Some(4.0));
        assert!((d.std.unwrap() - 3.535_533_905_932_738).abs() < 1e-12);
        for (got, want) in d.percentiles.iter().zip([2.0, 3.0, 4.0, 7.6]) {
            assert!((got.unwrap() - want).abs() < 1e-12, "{got:?} != {want}");
        }
        let one = Described::of(&Column::new("y", vec![Some(5.0), None]), &[0.5]);
        assert_eq!((one.count, one.std), (1.0, None));
        assert_eq!(percentile_label(0.999), "99.9%");
        assert_eq!(percentile_label(0.25), "25%");
        assert_eq!(header(&table_percentiles(100)).len(), 10);
    }

    #[test]
    fn summaries_drop_the_warmup_share_from_the_start() {
        let stat = |start: f64, latency: f64, conv: &str| RequestStats {
            ttft_ms: 1.0,
            tpot_ms: 1.0,
            latency_ms: latency,
            start_time_ms: start,
            input_num_turns: 1,
            input_num_tokens: 10,
            output_num_tokens: 5,
            output_num_chunks: 4,
            output_num_first_chunk_tokens: 1,
            approx_cached_percent: 0.0,
            conversation_id: conv.into(),
            client_id: 0,
            record_id: 0,
        };
        let stats = vec![
            stat(3000.0, 500.0, "a"),
            stat(0.0, 1000.0, "a"),
            stat(1000.0, 1000.0, "b"),
            stat(2000.0, 1000.0, "b"),
        ];
        let raw = RawData::new(&stats, true);
        assert_eq!(raw.between_turns.as_ref().unwrap()[3], Some(3.0));
        let s = summarise(&raw, &[0.0, 0.5], None);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].param("runtime_sec"), Some(3.5));
        assert_eq!(s[1].param("runtime_sec"), Some(1.5));
        assert_eq!(s[1].row("latency_ms").unwrap().count, 2.0);
    }
}
