//! How long jobs show progress: a bar (`indicatif`) when a person watches
//! a terminal, otherwise log lines, at most one per [`LOG_EVERY`] plus the
//! first and the last, so a 3 AM run in a pipe or a journal still says how
//! far it got without drowning the log.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub const LOG_EVERY: Duration = Duration::from_secs(2);
/// How many final reports (`done` reaching `total`) may log between the
/// intervals: a job in phases says each one ends, and a plugin that says
/// "done" in a loop cannot fill the log past the interval's pace.
const FINAL_REPORTS: u32 = 10;
/// Longest message a report logs: a progress line says where a job is.
pub const MAX_MESSAGE: usize = 256;

/// One job's progress, ended (the bar finished) on drop.
pub struct Progress {
    job: String,
    bar: Option<indicatif::ProgressBar>,
    last_logged: Option<Instant>,
    finals_logged: u32,
}

impl Progress {
    /// `interactive`: a person runs this job and stderr is a terminal.
    pub fn new(job: &str, interactive: bool) -> Self {
        let bar = (interactive && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(job.to_string());
            bar
        });
        Self {
            job: job.to_string(),
            bar,
            last_logged: None,
            finals_logged: 0,
        }
    }

    /// `done` of `total` (when known), with what is being done now.
    pub fn report(&mut self, done: u64, total: Option<u64>, message: &str) {
        if let Some(bar) = &self.bar {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(done);
            bar.set_message(message.to_string());
            return;
        }
        let last = total.is_some_and(|t| done >= t) && self.finals_logged < FINAL_REPORTS;
        let due = self.last_logged.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if !(last || due) {
            return;
        }
        if last {
            self.finals_logged += 1;
        }
        self.last_logged = Some(Instant::now());
        match total {
            Some(total) => tracing::info!(job = %self.job, done, total, "progress: {message}"),
            None => tracing::info!(job = %self.job, done, "progress: {message}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_and_last_and_no_more_than_one_per_interval() {
        let mut p = Progress::new("purge", false);
        assert!(p.bar.is_none(), "no terminal in a test");
        p.report(0, Some(100), "starting");
        let first = p.last_logged.unwrap();
        p.report(50, Some(100), "halfway");
        assert_eq!(p.last_logged, Some(first), "throttled");
        p.report(100, Some(100), "done");
        assert!(
            p.last_logged.unwrap() > first,
            "the last report always logs"
        );
        // "Done" said in a loop logs a few times, then at the interval's pace.
        for _ in 0..50 {
            p.report(1, Some(1), "done");
        }
        assert_eq!(p.finals_logged, FINAL_REPORTS);
        let at = p.last_logged;
        p.report(1, Some(1), "done");
        assert_eq!(p.last_logged, at, "throttled");
    }
}
