//! Each wave's progress: an indicatif bar per wave (applied of its size, the other counts and
//! its commit → applied latency beside it) when stdout is a terminal, else plain lines — one
//! per change — that scripts and tests read. `--watch` redraws on every event.

use std::io::{self, IsTerminal};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use locksmith_api::rollouts::{RolloutView, WaveKind, WaveView};

use super::view::state_cell;
use crate::output::out;

/// `canary` or `wave`.
fn kind_word(kind: WaveKind) -> &'static str {
    match kind {
        WaveKind::Canary => "canary",
        WaveKind::Wave => "wave",
    }
}

/// `wave 1 (canary)`: the bar's label.
pub fn wave_label(w: &WaveView) -> String {
    format!("wave {} ({})", w.index, kind_word(w.kind))
}

/// Everything but the applied count: `1 failed (0 allowed), 2 offline, 1 waiting for its
/// window, 3 pending, p50 12 ms p99 40 ms` — zero counts left out, failures always shown
/// with their allowance.
pub fn wave_counts(w: &WaveView) -> String {
    let mut parts = vec![format!(
        "{} failed ({} allowed)",
        w.failed, w.allowed_failures
    )];
    for (n, what) in [
        (w.offline, "offline"),
        (w.waiting_window, "waiting for a window"),
        (w.restored, "restored"),
        (w.pending, "pending"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if let Some(l) = &w.latency {
        parts.push(format!("p50 {} ms p99 {} ms", l.p50_ms, l.p99_ms));
    }
    parts.join(", ")
}

/// One wave as a plain line: `wave 0 (canary): 2/3 applied, 1 failed (0 allowed), …`.
pub fn wave_line(w: &WaveView) -> String {
    format!(
        "{}: {}/{} applied, {}",
        wave_label(w),
        w.applied,
        w.size,
        wave_counts(w)
    )
}

/// The line above the waves: `ro-4 running — applying wave 1 of 3`.
pub fn state_line(view: &RolloutView) -> String {
    format!("{} {} — {}", view.id, state_cell(view), view.summary)
}

/// Shows waves as they change: bars on a terminal, plain lines otherwise.
#[derive(Debug)]
pub enum WaveProgress {
    Bars(Bars),
    /// The lines printed last, so only what changed is printed again.
    Lines {
        state: String,
        waves: Vec<String>,
    },
}

impl WaveProgress {
    /// Bars when stdout is a terminal; else plain lines (the bars get indicatif's hidden draw
    /// target, so nothing is drawn twice).
    pub fn for_stdout() -> Self {
        if io::stdout().is_terminal() {
            WaveProgress::Bars(Bars::new(ProgressDrawTarget::stdout()))
        } else {
            WaveProgress::Lines {
                state: String::new(),
                waves: Vec::new(),
            }
        }
    }

    /// Shows `view`; plain lines print the state line and each wave line that changed.
    pub fn update(&mut self, view: &RolloutView) -> io::Result<()> {
        match self {
            WaveProgress::Bars(bars) => {
                bars.update(view);
                Ok(())
            }
            WaveProgress::Lines { state, waves } => {
                for line in changed_lines(state, waves, view) {
                    out(&line)?;
                }
                Ok(())
            }
        }
    }

    /// Leaves the bars drawn as they are last, so what follows prints below them.
    pub fn finish(&self) {
        if let WaveProgress::Bars(bars) = self {
            bars.finish();
        }
    }
}

/// The lines that differ from the ones printed last (which it updates): the state line, then
/// each changed wave, indented.
pub fn changed_lines(
    state: &mut String,
    waves: &mut Vec<String>,
    view: &RolloutView,
) -> Vec<String> {
    let mut lines = Vec::new();
    let now = state_line(view);
    if *state != now {
        lines.push(now.clone());
        *state = now;
    }
    for (i, w) in view.waves.iter().enumerate() {
        let line = format!("  {}", wave_line(w));
        if waves.get(i) != Some(&line) {
            lines.push(line.clone());
            if i < waves.len() {
                waves[i] = line;
            } else {
                waves.push(line);
            }
        }
    }
    lines
}

/// A state line and one bar per wave, redrawn in place.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
    state: ProgressBar,
    waves: Vec<ProgressBar>,
}

impl Bars {
    fn new(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let state = multi.add(ProgressBar::new(0).with_style(message_style()));
        Self {
            multi,
            state,
            waves: Vec::new(),
        }
    }

    fn update(&mut self, view: &RolloutView) {
        self.state.set_message(state_line(view));
        for (i, w) in view.waves.iter().enumerate() {
            if i == self.waves.len() {
                let bar = ProgressBar::new(0)
                    .with_style(bar_style())
                    .with_prefix(wave_label(w));
                self.waves.push(self.multi.add(bar));
            }
            let bar = &self.waves[i];
            bar.set_length(w.size as u64);
            bar.set_position(w.applied as u64);
            bar.set_message(wave_counts(w));
        }
    }

    fn finish(&self) {
        self.state.finish();
        for bar in &self.waves {
            bar.finish();
        }
    }
}

/// The state line: the message alone.
fn message_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// `wave 1 (wave)  [#######-------]  7/20 applied  1 failed (1 allowed), …`.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix:<16} [{bar:30}] {pos:>5}/{len:<5} applied  {msg}")
        .map(|s| s.progress_chars("#>-"))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::rollout::view::tests::view;

    #[test]
    fn a_wave_line_gives_applied_of_size_failures_with_their_allowance_and_latency() {
        let v = view(10);
        assert_eq!(
            wave_line(&v.waves[0]),
            "wave 0 (canary): 2/3 applied, 1 failed (1 allowed), p50 20 ms p99 30 ms"
        );
        assert_eq!(
            wave_line(&v.waves[1]),
            "wave 1 (wave): 6/7 applied, 0 failed (1 allowed), 1 offline, p50 20 ms p99 30 ms"
        );
    }

    #[test]
    fn plain_progress_prints_only_what_changed() {
        let (mut state, mut waves) = (String::new(), Vec::new());
        let mut v = view(5);
        let first = changed_lines(&mut state, &mut waves, &v);
        assert_eq!(
            first,
            [
                "ro-4 running — awaiting approval after wave 0 (1 of 2)",
                "  wave 0 (canary): 2/3 applied, 1 failed (1 allowed), p50 20 ms p99 30 ms",
                "  wave 1 (wave): 2/2 applied, 0 failed (1 allowed), p50 20 ms p99 30 ms",
            ]
        );
        assert!(changed_lines(&mut state, &mut waves, &v).is_empty());
        v.waves[1].applied = 1;
        v.waves[1].pending = 1;
        assert_eq!(
            changed_lines(&mut state, &mut waves, &v),
            ["  wave 1 (wave): 1/2 applied, 0 failed (1 allowed), 1 pending, p50 20 ms p99 30 ms"]
        );
    }

    #[test]
    fn hidden_bars_follow_the_view() {
        let mut bars = Bars::new(ProgressDrawTarget::hidden());
        let v = view(10);
        bars.update(&v);
        assert_eq!(bars.waves.len(), 2);
        assert_eq!(bars.waves[1].length(), Some(7));
        assert_eq!(bars.waves[1].position(), 6);
        assert!(bars.waves[1].message().contains("1 offline"));
        bars.finish();
        assert!(bars.waves.iter().all(ProgressBar::is_finished));
    }
}
