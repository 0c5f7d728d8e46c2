//! The `locksmith rollout start` syntaxes, as pure functions with typed errors, so the CLI and
//! the server parse them the same way.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::spec::{Budget, Canary, Comparison, Gate, HoldAfter, OnFailure, Percent, Waves, Window};

/// Why a flag's value does not parse. Each names the flag, the text and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("{flag} {text:?}: expected a percentage like 10% or 2.5% (0% < p <= 100%)")]
    Percent { flag: &'static str, text: String },
    #[error("{flag} {text:?}: expected a whole number")]
    Count { flag: &'static str, text: String },
    #[error("--exponential {text:?}: expected a factor like 2x or 1.5x, more than 1x")]
    Factor { text: String },
    #[error("{flag} {text:?}: expected a duration like 500ms, 60s, 30m or 2h")]
    Duration { flag: &'static str, text: String },
    #[error(
        "--waves {text:?}: expected cumulative percentages that increase and end at 100%, like 10%,50%,100%"
    )]
    Waves { text: String },
    #[error("{flag} {text:?}: expected one of {expected}")]
    Choice {
        flag: &'static str,
        text: String,
        expected: &'static str,
    },
    #[error("{flag} {text:?}: expected LABEL=VALUE pairs separated by commas")]
    Labels { flag: &'static str, text: String },
    #[error("--canary-nodes {text:?}: expected node names separated by commas, each once")]
    Nodes { text: String },
    #[error(
        "--window {text:?}: expected [LABEL[=VALUE]@]HH:MM-HH:MM (UTC), start and end different"
    )]
    Window { text: String },
    #[error(
        "--gate {text:?}: expected METRIC OP NUMBER or prom:QUERY OP NUMBER, OP one of < <= > >=, like 'error_rate < 0.01'"
    )]
    Gate { text: String },
}

/// `10%`, `2.5%`, `0.25%`: more than 0, at most 100, two decimals at most.
pub fn parse_percent(flag: &'static str, text: &str) -> Result<Percent, ParseError> {
    let err = || ParseError::Percent {
        flag,
        text: text.to_owned(),
    };
    let body = text.trim().strip_suffix('%').ok_or_else(err)?;
    let hundredths = parse_fixed(body, 2).ok_or_else(err)?;
    if hundredths == 0 || hundredths > 10_000 {
        return Err(err());
    }
    u32::try_from(hundredths).map(Percent).map_err(|_| err())
}

/// A non-negative decimal with at most `places` fractional digits, scaled by 10^places.
fn parse_fixed(text: &str, places: u32) -> Option<u64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (text.contains('.') && !digits(frac)) || frac.len() > places as usize {
        return None;
    }
    let scale = 10u64.pow(places);
    let whole: u64 = whole.parse().ok()?;
    let frac_scaled = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(places - frac.len() as u32)
    };
    whole.checked_mul(scale)?.checked_add(frac_scaled)
}

/// `--waves 10%,50%,100%`.
pub fn parse_waves(text: &str) -> Result<Waves, ParseError> {
    let err = || ParseError::Waves {
        text: text.to_owned(),
    };
    let steps = text
        .split(',')
        .map(|s| parse_percent("--waves", s).map_err(|_| err()))
        .collect::<Result<Vec<_>, _>>()?;
    let increasing = steps.windows(2).all(|w| w[0] < w[1]);
    if !increasing || steps.last() != Some(&Percent::ALL) {
        return Err(err());
    }
    Ok(Waves::Steps(steps))
}

/// `--linear 20%`.
pub fn parse_linear(text: &str) -> Result<Waves, ParseError> {
    parse_percent("--linear", text).map(Waves::Linear)
}

/// `--exponential 2x` (or `2`, `1.5x`): more than 1x.
pub fn parse_exponential(text: &str) -> Result<Waves, ParseError> {
    let err = || ParseError::Factor {
        text: text.to_owned(),
    };
    let body = text.trim();
    let body = body.strip_suffix(['x', 'X']).unwrap_or(body);
    let factor = parse_fixed(body, 2).ok_or_else(err)?;
    if factor <= 100 {
        return Err(err());
    }
    let factor = u32::try_from(factor).map_err(|_| err())?;
    Ok(Waves::Exponential { factor })
}

/// `--max-failures 0`, `--max-failures 5%`.
pub fn parse_budget(text: &str) -> Result<Budget, ParseError> {
    if text.trim().ends_with('%') {
        return parse_percent("--max-failures", text).map(Budget::Percent);
    }
    parse_count("--max-failures", text).map(Budget::Count)
}

/// A whole number.
pub fn parse_count(flag: &'static str, text: &str) -> Result<u32, ParseError> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Count {
            flag,
            text: text.to_owned(),
        });
    }
    t.parse().map_err(|_| ParseError::Count {
        flag,
        text: text.to_owned(),
    })
}

/// `--canary 3`.
pub fn parse_canary_count(text: &str) -> Result<Canary, ParseError> {
    parse_count("--canary", text).map(Canary::Count)
}

/// `--canary-nodes a,b,c`: each node once.
pub fn parse_canary_nodes(text: &str) -> Result<Canary, ParseError> {
    let err = || ParseError::Nodes {
        text: text.to_owned(),
    };
    let nodes: Vec<String> = text.split(',').map(|n| n.trim().to_owned()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for n in &nodes {
        if n.is_empty() || !seen.insert(n.as_str()) {
            return Err(err());
        }
    }
    Ok(Canary::Nodes(nodes))
}

/// `500ms`, `60s`, `30m`, `2h`, or `0`.
pub fn parse_duration_ms(flag: &'static str, text: &str) -> Result<u64, ParseError> {
    let err = || ParseError::Duration {
        flag,
        text: text.to_owned(),
    };
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(err()),
    };
    n.checked_mul(scale).ok_or_else(err)
}

/// `--hold-after canary|each-wave|none`.
pub fn parse_hold_after(text: &str) -> Result<HoldAfter, ParseError> {
    match text.trim() {
        "none" => Ok(HoldAfter::None),
        "canary" => Ok(HoldAfter::Canary),
        "each-wave" => Ok(HoldAfter::EachWave),
        _ => Err(ParseError::Choice {
            flag: "--hold-after",
            text: text.to_owned(),
            expected: "canary, each-wave, none",
        }),
    }
}

/// `--on-failure rollback|freeze|pause`.
pub fn parse_on_failure(text: &str) -> Result<OnFailure, ParseError> {
    match text.trim() {
        "rollback" => Ok(OnFailure::Rollback),
        "freeze" => Ok(OnFailure::Freeze),
        "pause" => Ok(OnFailure::Pause),
        _ => Err(ParseError::Choice {
            flag: "--on-failure",
            text: text.to_owned(),
            expected: "rollback, freeze, pause",
        }),
    }
}

/// `--select role=drone,site=eu`.
pub fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let err = || ParseError::Labels {
        flag: "--select",
        text: text.to_owned(),
    };
    let mut out = BTreeMap::new();
    for pair in text.split(',') {
        let (k, v) = pair.split_once('=').ok_or_else(err)?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() || out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(err());
        }
    }
    Ok(out)
}

/// `--window 02:00-04:00`, `--window site@02:00-04:00`, `--window site=eu@22:00-02:00`.
pub fn parse_window(text: &str) -> Result<Window, ParseError> {
    let err = || ParseError::Window {
        text: text.to_owned(),
    };
    let (scope, range) = match text.trim().rsplit_once('@') {
        Some((scope, range)) => (Some(scope), range),
        None => (None, text.trim()),
    };
    let (label, value) = match scope {
        None => (None, None),
        Some(s) => match s.split_once('=') {
            Some((l, v)) if !l.is_empty() && !v.is_empty() => {
                (Some(l.to_owned()), Some(v.to_owned()))
            }
            None if !s.is_empty() => (Some(s.to_owned()), None),
            _ => return Err(err()),
        },
    };
    let (start, end) = range.split_once('-').ok_or_else(err)?;
    let hhmm = |t: &str| -> Option<u16> {
        let (h, m) = t.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (start_min, end_min) = (hhmm(start).ok_or_else(err)?, hhmm(end).ok_or_else(err)?);
    if start_min == end_min {
        return Err(err());
    }
    Ok(Window {
        label,
        value,
        start_min,
        end_min,
    })
}

/// `--gate 'error_rate < 0.01'` (an agent-reported metric) or `--gate 'prom:QUERY < 0.01'` (a
/// Prometheus query; the last comparison in the text is the gate's, so the query may hold
/// comparisons of its own).
pub fn parse_gate(text: &str) -> Result<Gate, ParseError> {
    let err = || ParseError::Gate {
        text: text.to_owned(),
    };
    let t = text.trim();
    let prom = t.strip_prefix("prom:");
    let body = prom.unwrap_or(t);
    let at = if prom.is_some() {
        body.rfind(['<', '>'])
    } else {
        body.find(['<', '>'])
    }
    .ok_or_else(err)?;
    let (subject, rest) = body.split_at(at);
    let (op, number) = if let Some(n) = rest.strip_prefix("<=") {
        (Comparison::Le, n)
    } else if let Some(n) = rest.strip_prefix(">=") {
        (Comparison::Ge, n)
    } else if let Some(n) = rest.strip_prefix('<') {
        (Comparison::Lt, n)
    } else if let Some(n) = rest.strip_prefix('>') {
        (Comparison::Gt, n)
    } else {
        return Err(err());
    };
    let subject = subject.trim();
    let threshold: f64 = number.trim().parse().map_err(|_| err())?;
    if !threshold.is_finite() || subject.is_empty() {
        return Err(err());
    }
    if prom.is_some() {
        return Ok(Gate::Prometheus {
            name: format!("prom:{subject}"),
            query: subject.to_owned(),
            op,
            threshold,
        });
    }
    let valid_name = subject
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'.');
    if !valid_name {
        return Err(err());
    }
    Ok(Gate::Metric {
        metric: subject.to_owned(),
        op,
        threshold,
    })
}
