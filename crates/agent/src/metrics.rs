//! Numbers a health hook reports for rollout gates: each line of its output of the form
//!
//! ```text
//! metric NAME=VALUE
//! ```
//!
//! with NAME matching `[A-Za-z_:.][A-Za-z0-9_:.]*` and VALUE a finite number (`0.002`, `12`,
//! `-3.5e-4`; not `NaN` or `inf`), becomes one of the report's `metrics`. Whitespace around the
//! line, the name and the value is ignored. A line that does not start with the word `metric`
//! is output like any other; a `metric` line that is not of this form is *malformed*: logged and
//! ignored, never a hook failure (the hook's exit status alone says whether it failed). A name
//! printed twice keeps its last value.
//!
//! Parsing is pure: [`MetricLines`] takes the output's bytes as they arrive, so the whole
//! output is read (not only the 4 KiB tail kept for error messages), in bounded memory.

use std::collections::BTreeMap;

use thiserror::Error;

/// At most this many metrics per hook run: the report carries them all to the server.
pub const MAX_METRICS: usize = 256;
/// A longer line is not read as a metric (a `metric` line this long is malformed).
pub const MAX_METRIC_LINE_BYTES: usize = 1024;
/// At most this many malformed lines are kept for the log per hook run.
pub const MAX_MALFORMED: usize = 16;

/// Why a `metric` line was not taken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetricLineError {
    /// No `=` after the name.
    #[error("no `=` between the name and the value (write `metric NAME=VALUE`)")]
    NoEquals,
    /// The name is empty or has a character outside `[A-Za-z0-9_:.]` (or starts with a digit).
    #[error(
        "{name:?} is not a metric name (letters, digits, `_`, `:` and `.`, not starting with a digit)"
    )]
    BadName {
        /// The name as written.
        name: String,
    },
    /// The value is not a finite number.
    #[error("{value:?} is not a finite number")]
    BadValue {
        /// The value as written.
        value: String,
    },
    /// The line is longer than [`MAX_METRIC_LINE_BYTES`].
    #[error("the line is longer than {MAX_METRIC_LINE_BYTES} bytes")]
    TooLong,
    /// [`MAX_METRICS`] metrics were taken already.
    #[error("more than {MAX_METRICS} metrics: the rest are ignored")]
    TooMany,
}

/// A malformed `metric` line and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedMetric {
    /// The line (cut to [`MAX_METRIC_LINE_BYTES`]), lossily decoded.
    pub line: String,
    /// Why it was not taken.
    pub error: MetricLineError,
}

/// Whether `line` is a `metric` line: the word `metric`, then whitespace or nothing.
fn metric_rest(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("metric")?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some(rest)
}

/// One line of output: `None` if it is not a `metric` line, else the metric or why not.
pub fn parse_metric_line(line: &str) -> Option<Result<(String, f64), MetricLineError>> {
    let rest = metric_rest(line)?;
    Some(parse_pair(rest.trim()))
}

fn parse_pair(pair: &str) -> Result<(String, f64), MetricLineError> {
    let (name, value) = pair.split_once('=').ok_or(MetricLineError::NoEquals)?;
    let (name, value) = (name.trim(), value.trim());
    if !is_metric_name(name) {
        return Err(MetricLineError::BadName { name: name.into() });
    }
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok((name.to_owned(), v)),
        _ => Err(MetricLineError::BadValue {
            value: value.into(),
        }),
    }
}

/// `[A-Za-z_:.][A-Za-z0-9_:.]*` — Prometheus' metric names, plus `.`.
pub fn is_metric_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.');
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if ok(c) && !c.is_ascii_digit()) && chars.all(ok)
}

/// The metrics of a whole output, fed in pieces as it is read.
#[derive(Debug, Default)]
pub struct MetricLines {
    /// The line read so far (at most [`MAX_METRIC_LINE_BYTES`] of it).
    line: Vec<u8>,
    /// Whether the line in hand went past the limit.
    overlong: bool,
    metrics: BTreeMap<String, f64>,
    malformed: Vec<MalformedMetric>,
}

impl MetricLines {
    /// Reads `bytes`, the next piece of the output.
    pub fn push(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            self.take(&rest[..at]);
            self.end_line();
            rest = &rest[at + 1..];
        }
        self.take(rest);
    }

    /// The output ended: its last line (without a newline) counts too.
    pub fn finish(mut self) -> (BTreeMap<String, f64>, Vec<MalformedMetric>) {
        if !self.line.is_empty() || self.overlong {
            self.end_line();
        }
        (self.metrics, self.malformed)
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = MAX_METRIC_LINE_BYTES.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.overlong = true;
        }
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        let overlong = std::mem::take(&mut self.overlong);
        self.line.clear();
        let parsed = match (metric_rest(&line), overlong) {
            (None, _) => return,
            (Some(_), true) => Err(MetricLineError::TooLong),
            (Some(rest), false) => parse_pair(rest.trim()),
        };
        let parsed = match parsed {
            Ok((name, _))
                if self.metrics.len() >= MAX_METRICS && !self.metrics.contains_key(&name) =>
            {
                Err(MetricLineError::TooMany)
            }
            other => other,
        };
        match parsed {
            Ok((name, value)) => {
                self.metrics.insert(name, value);
            }
            Err(error) => {
                if self.malformed.len() < MAX_MALFORMED {
                    self.malformed.push(MalformedMetric {
                        line: line.trim().to_owned(),
                        error,
                    });
                }
            }
        }
    }
}

/// The metrics of a whole output at once (see [`MetricLines`]).
pub fn parse_metrics(output: &[u8]) -> (BTreeMap<String, f64>, Vec<MalformedMetric>) {
    let mut lines = MetricLines::default();
    lines.push(output);
    lines.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> (String, f64) {
        parse_metric_line(line)
            .unwrap_or_else(|| panic!("{line:?} is a metric line"))
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn bad(line: &str) -> MetricLineError {
        match parse_metric_line(line) {
            Some(Err(e)) => e,
            other => panic!("{line:?} should be malformed, got {other:?}"),
        }
    }

    #[test]
    fn metric_lines_give_a_name_and_a_finite_value() {
        assert_eq!(ok("metric error_rate=0.002"), ("error_rate".into(), 0.002));
        assert_eq!(ok("  metric\tp99_ms = 12 \r"), ("p99_ms".into(), 12.0));
        assert_eq!(
            ok("metric http:req.5xx=-3.5e-4"),
            ("http:req.5xx".into(), -3.5e-4)
        );
        assert_eq!(ok("metric _x=+1"), ("_x".into(), 1.0));
    }

    #[test]
    fn other_lines_are_not_metric_lines() {
        for line in [
            "",
            "ok",
            "metrics: 3",
            "metricerror_rate=1",
            "# metric x=1",
            "the metric x=1",
        ] {
            assert_eq!(parse_metric_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn malformed_metric_lines_say_why() {
        assert_eq!(bad("metric"), MetricLineError::NoEquals);
        assert_eq!(bad("metric error_rate 0.1"), MetricLineError::NoEquals);
        assert!(matches!(bad("metric =1"), MetricLineError::BadName { .. }));
        assert!(matches!(
            bad("metric 5xx=1"),
            MetricLineError::BadName { .. }
        ));
        assert!(matches!(
            bad("metric a-b=1"),
            MetricLineError::BadName { .. }
        ));
        assert!(matches!(
            bad("metric a b=1"),
            MetricLineError::BadName { .. }
        ));
        for value in [
            "", "NaN", "inf", "-inf", "0x10", "1,5", "1e999", "one", "1=2",
        ] {
            assert_eq!(
                bad(&format!("metric a={value}")),
                MetricLineError::BadValue {
                    value: value.into()
                },
                "{value:?}"
            );
        }
    }

    #[test]
    fn metric_names_follow_the_documented_pattern() {
        for name in ["a", "_", ":", ".", "a1", "error_rate", "x:y.z_9", "A"] {
            assert!(is_metric_name(name), "{name:?}");
        }
        for name in ["", "1a", "a-b", "a b", "é", "a/b", "a=b"] {
            assert!(!is_metric_name(name), "{name:?}");
        }
    }

    #[test]
    fn a_whole_output_keeps_every_metric_the_last_value_of_a_repeated_name_and_the_malformed_lines()
    {
        let (metrics, malformed) = parse_metrics(
            b"starting\nmetric error_rate=0.5\nmetric p99_ms=12\nmetric bad\nmetric error_rate=0.002\nmetric last=7",
        );
        assert_eq!(
            metrics,
            BTreeMap::from([
                ("error_rate".into(), 0.002),
                ("last".into(), 7.0),
                ("p99_ms".into(), 12.0)
            ])
        );
        assert_eq!(
            malformed,
            vec![MalformedMetric {
                line: "metric bad".into(),
                error: MetricLineError::NoEquals
            }]
        );
    }

    #[test]
    fn lines_split_across_reads_are_joined_before_parsing() {
        let text = b"noise\nmetric error_rate=0.002\nmetric p99=3\n";
        for cut in 0..text.len() {
            let mut lines = MetricLines::default();
            lines.push(&text[..cut]);
            lines.push(&text[cut..]);
            let (m, bad) = lines.finish();
            assert_eq!(m.len(), 2, "cut at {cut}: {m:?}");
            assert_eq!(m["error_rate"], 0.002);
            assert!(bad.is_empty());
        }
    }

    #[test]
    fn memory_stays_bounded_by_line_length_metric_count_and_malformed_count() {
        let mut lines = MetricLines::default();
        // A long line that is not a metric line is ignored; a long `metric` line is malformed.
        lines.push(&vec![b'a'; 10 * MAX_METRIC_LINE_BYTES]);
        lines.push(b"\nmetric x=");
        lines.push(&vec![b'1'; 2 * MAX_METRIC_LINE_BYTES]);
        lines.push(b"\n");
        for i in 0..MAX_METRICS + 10 {
            lines.push(format!("metric m{i}=1\n").as_bytes());
        }
        for _ in 0..MAX_MALFORMED * 2 {
            lines.push(b"metric ?=1\n");
        }
        assert!(lines.line.is_empty());
        let (metrics, malformed) = lines.finish();
        assert_eq!(metrics.len(), MAX_METRICS);
        assert_eq!(malformed.len(), MAX_MALFORMED);
        assert_eq!(malformed[0].error, MetricLineError::TooLong);
        assert!(malformed[0].line.len() <= MAX_METRIC_LINE_BYTES);
        assert_eq!(malformed[1].error, MetricLineError::TooMany);
    }
}
