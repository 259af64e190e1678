//! The across-runs table of `--num-runs`: per metric the runs' mean, standard deviation,
//! coefficient of variation and 95 % interval, with the metrics too noisy to compare named.

use std::io::Write;

use llmb_engine::repeat::{NOISY_CV, Spread};

/// Prints the spreads of one stage's repeated runs.
pub fn print_spreads(
    title: &str,
    runs: usize,
    spreads: &[Spread],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "{:=^78}", format!(" {title}: {runs} runs "))?;
    writeln!(
        out,
        "{:<20} {:>6} {:>11} {:>10} {:>7} {:>25}  note",
        "metric", "unit", "mean", "std", "CV %", "95 % interval of mean"
    )?;
    for s in spreads {
        writeln!(
            out,
            "{:<20} {:>6} {:>11.3} {:>10.3} {:>7.2} {:>25}  {}",
            s.metric,
            s.unit,
            s.mean,
            s.std,
            s.cv * 100.0,
            format!("[{:.3}, {:.3}]", s.ci_low, s.ci_high),
            if s.noisy { "too noisy to compare" } else { "" }
        )?;
    }
    let noisy: Vec<&str> = spreads
        .iter()
        .filter(|s| s.noisy)
        .map(|s| s.metric.as_str())
        .collect();
    if noisy.is_empty() {
        writeln!(
            out,
            "Every metric varied by at most {:.0} % between runs.",
            NOISY_CV * 100.0
        )?;
    } else {
        writeln!(
            out,
            "Too noisy to compare (runs vary by more than {:.0} % of the mean): {}. A change \
             in these smaller than about twice their CV cannot be told from run-to-run noise; \
             more runs or longer runs narrow the interval.",
            NOISY_CV * 100.0,
            noisy.join(", ")
        )?;
    }
    writeln!(out, "{}", "=".repeat(78))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_noisy_metrics() {
        let spreads = vec![
            Spread::of("mean_ttft", "ms", vec![20.0, 20.1, 19.9]).unwrap(),
            Spread::of("p99_ttft", "ms", vec![20.0, 40.0, 30.0]).unwrap(),
        ];
        let mut out = Vec::new();
        print_spreads("stage", 3, &spreads, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Too noisy to compare"), "{text}");
        assert!(text.contains(": p99_ttft."), "{text}");
        assert!(!text.contains(": mean_ttft"), "{text}");
    }
}
