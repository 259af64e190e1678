//! The end-of-sweep stage table: one row per stage, then the best load and the saturation
//! verdict the engine's [`llmb_engine::sweep::verdict`] found.

use std::io::Write;

use llmb_engine::sweep::{StageSummary, SweepVerdict};

/// Which load columns the table shows: whatever varies across stages, so a concurrency sweep
/// is not cluttered by a constant rate and vice versa.
struct LoadColumns {
    concurrency: bool,
    rate: bool,
    round: bool,
}

impl LoadColumns {
    fn of(stages: &[StageSummary]) -> Self {
        let varies = |differ: &dyn Fn(&StageSummary, &StageSummary) -> bool| {
            stages
                .first()
                .is_some_and(|first| stages.iter().any(|s| differ(first, s)))
        };
        let concurrency_varies = varies(&|a, b| a.concurrency != b.concurrency);
        let rate_varies = varies(&|a, b| a.request_rate.to_bits() != b.request_rate.to_bits());
        let concurrency =
            concurrency_varies || (!rate_varies && stages.iter().any(|s| s.concurrency.is_some()));
        LoadColumns {
            concurrency,
            rate: rate_varies || !concurrency,
            round: stages.iter().any(|s| s.round > 1),
        }
    }

    /// The stage's load in words, for the verdict lines.
    fn describe(&self, s: &StageSummary) -> String {
        let mut parts = Vec::new();
        if self.concurrency {
            parts.push(match s.concurrency {
                Some(c) => format!("concurrency {c}"),
                None => "unlimited concurrency".to_string(),
            });
        }
        if self.rate {
            parts.push(format!("{} req/s", s.request_rate));
        }
        if self.round {
            parts.push(format!("round {}", s.round));
        }
        parts.join(", ")
    }
}

/// Prints the end-of-sweep table, one row per stage, then the best load and the saturation
/// verdict, in the plain aligned style of vLLM's console report so the two read alike.
pub fn print_stage_table(
    stages: &[StageSummary],
    verdict: &SweepVerdict,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let cols = LoadColumns::of(stages);
    let mut header: Vec<&str> = Vec::new();
    if cols.concurrency {
        header.push("Concurrency");
    }
    if cols.rate {
        header.push("Rate (req/s)");
    }
    if cols.round {
        header.push("Round");
    }
    header.extend([
        "req/s",
        "out tok/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "E2EL p50 ms",
        "E2EL p95 ms",
        "E2EL p99 ms",
        "Error %",
    ]);
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|s| {
            let mut row = Vec::new();
            if cols.concurrency {
                row.push(s.concurrency.map_or("-".to_string(), |c| c.to_string()));
            }
            if cols.rate {
                row.push(s.request_rate.to_string());
            }
            if cols.round {
                row.push(s.round.to_string());
            }
            for v in [
                s.request_throughput,
                s.output_throughput,
                s.ttft_p50_ms,
                s.ttft_p99_ms,
                s.e2el_p50_ms,
                s.e2el_p95_ms,
                s.e2el_p99_ms,
                s.error_rate() * 100.0,
            ] {
                row.push(format!("{v:.2}"));
            }
            row
        })
        .collect();
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r[i].len()).fold(h.len(), usize::max))
        .collect();
    let print_row = |out: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        writeln!(out, "{}", line.join("  "))
    };

    writeln!(out, "{:=^50}", " Stage summary ")?;
    print_row(out, &header)?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        print_row(out, &cells)?;
    }
    writeln!(out, "{}", "=".repeat(50))?;
    match verdict.best.and_then(|b| stages.get(b)) {
        Some(s) => writeln!(
            out,
            "Best throughput: {:.2} tok/s at {}",
            s.output_throughput,
            cols.describe(s)
        )?,
        None => writeln!(out, "Best throughput: none (no stage to compare)")?,
    }
    match &verdict.saturation {
        Some(sat) if sat.knee < stages.len() && sat.flat < stages.len() => writeln!(
            out,
            "Saturation: throughput stops growing after {} ({}: {:+.1}% tok/s, p99 E2EL {:+.1}%, errors {:+.1} pp)",
            cols.describe(&stages[sat.knee]),
            cols.describe(&stages[sat.flat]),
            sat.throughput_gain * 100.0,
            sat.p99_e2el_rise * 100.0,
            sat.error_rate_rise * 100.0,
        )?,
        _ => writeln!(out, "Saturation: not reached within the tested loads")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_engine::sweep::verdict;

    fn stage(concurrency: usize, tok_s: f64, p99: f64, failed: usize) -> StageSummary {
        StageSummary {
            label: format!("c{concurrency}"),
            concurrency: Some(concurrency),
            request_rate: f64::INFINITY,
            round: 1,
            completed: 100 - failed,
            failed,
            request_throughput: tok_s / 100.0,
            output_throughput: tok_s,
            ttft_p50_ms: p99 / 10.0,
            ttft_p99_ms: p99 / 5.0,
            e2el_p50_ms: p99 / 2.0,
            e2el_p95_ms: p99 * 0.9,
            e2el_p99_ms: p99,
        }
    }

    fn saturating() -> Vec<StageSummary> {
        vec![
            stage(1, 100.0, 1000.0, 0),
            stage(2, 190.0, 1050.0, 0),
            stage(4, 360.0, 1100.0, 0),
            stage(8, 370.0, 2000.0, 0),
            stage(16, 380.0, 4000.0, 3),
        ]
    }

    fn table(stages: &[StageSummary]) -> String {
        let mut out = Vec::new();
        print_stage_table(stages, &verdict(stages), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_table_shows_rows_and_verdict() {
        let text = table(&saturating());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("{} Stage summary {}", "=".repeat(17), "=".repeat(18))
        );
        assert!(lines[1].contains("Concurrency") && lines[1].contains("out tok/s"));
        assert!(!lines[1].contains("Rate") && !lines[1].contains("Round"));
        assert_eq!(lines.len(), 2 + 5 + 3, "{text}");
        let widths: Vec<usize> = lines[1..7].iter().map(|l| l.len()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{text}");
        let cells: Vec<&str> = lines[6].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "16", "3.80", "380.00", "400.00", "800.00", "2000.00", "3600.00", "4000.00", "3.00"
            ]
        );
        assert_eq!(lines[7], "=".repeat(50));
        assert_eq!(lines[8], "Best throughput: 380.00 tok/s at concurrency 16");
        assert_eq!(
            lines[9],
            "Saturation: throughput stops growing after concurrency 4 (concurrency 8: +2.8% tok/s, p99 E2EL +81.8%, errors +0.0 pp)"
        );
    }

    #[test]
    fn the_table_shows_the_loads_that_vary() {
        let rates: Vec<StageSummary> = [1.0, 2.5, f64::INFINITY]
            .into_iter()
            .enumerate()
            .map(|(i, r)| StageSummary {
                concurrency: None,
                request_rate: r,
                round: 1 + (i as u32 % 2),
                ..stage(1, 100.0 * (i + 1) as f64, 1000.0, 0)
            })
            .collect();
        let text = table(&rates);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("Rate (req/s)") && lines[1].contains("Round"));
        assert!(!lines[1].contains("Concurrency"));
        assert!(lines[3].trim_start().starts_with("2.5  "), "{text}");
        assert!(lines[4].trim_start().starts_with("inf  "), "{text}");
        assert!(
            text.contains("Best throughput: 300.00 tok/s at inf req/s, round 1\n"),
            "{text}"
        );
        assert!(text.ends_with("Saturation: not reached within the tested loads\n"));

        let both: Vec<StageSummary> = (1..=2)
            .map(|i| StageSummary {
                request_rate: f64::from(i),
                ..stage(i as usize, 100.0, 1000.0, 0)
            })
            .collect();
        let text = table(&both);
        assert!(text.contains("Concurrency") && text.contains("Rate (req/s)"));
        assert!(text.contains("at concurrency 1, 1 req/s\n"), "{text}");

        let text = table(&[]);
        assert!(text.contains("Best throughput: none"));
    }
}
