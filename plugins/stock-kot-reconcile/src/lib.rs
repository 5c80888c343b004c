//! Stock vs KOT reconciliation (spec "Stock vs KOT Reconciliation"):
//! `stock-kot-reconcile --csv report.csv --threshold 5 [--verbose] [--json]`.
//!
//! Streams the one CSV the invocation names (the manifest grants
//! `files = ["arg:--csv"]`), skips invalid rows with warnings, and sends one
//! email to the ops address listing the rows whose |variance| exceeds the
//! threshold. The CSV and threshold logic (`csv`, `reconcile`, `report`) has
//! no host dependency; this file is the glue to the host.

pub mod csv;
pub mod reconcile;
pub mod report;

use neo_ops_sdk::file_reader::FileReader;
use neo_ops_sdk::log::{self, Level};
use neo_ops_sdk::{
    ErrorCode, Failure, Invocation, Output, Plugin, args::Args, config, mail, reply,
};
use reconcile::{Observer, Row, Skip, Summary};
use report::Mail;

const USAGE: &str = "usage: stock-kot-reconcile --csv <report.csv> --threshold <number> \
                     [--verbose] [--json] [--dry-run]";
const DEFAULT_OPS_EMAIL: &str = "ops@example.com";

struct StockKotReconcile;

impl Plugin for StockKotReconcile {
    const DRY_RUN: bool = true;
    const USAGE: &'static str = USAGE;

    fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
        reconcile_file(args, args.dry_run(inv))
    }
}

struct Options {
    csv: String,
    threshold: f64,
    verbose: bool,
    json: bool,
}

fn reconcile_file(args: &Args, dry_run: bool) -> Result<Output, Failure> {
    let opts = options(args)?;
    let file = FileReader::open(&opts.csv).map_err(file_error)?;
    let mut logger = Logger {
        verbose: opts.verbose,
    };
    // The SDK's reader is buffered itself: 1 MiB per host call, parsed in place.
    let summary = reconcile::reconcile(file, opts.threshold, &mut logger)
        .map_err(|e| reconcile_error(&opts.csv, e))?;
    if summary.rows_read > 0 && summary.skipped == summary.rows_read {
        // Nothing was checked: a clean report would hide whatever the rows
        // hold (a trailing comma on every row, say).
        let first = summary
            .skips
            .first()
            .map(|k| format!(" (line {}: {})", k.line, k.reason))
            .unwrap_or_default();
        return Err(reply::fail(
            400,
            format!(
                "{}: every one of the {} rows was skipped as invalid{first}; nothing was checked",
                opts.csv, summary.rows_read
            ),
        ));
    }
    log::progress(summary.rows_read, Some(summary.rows_read), "every row read");
    log_summary(&summary, &opts.csv);
    let mail = notify(&summary, &opts.csv, dry_run)?;
    Ok(if opts.json {
        reply::ok(report::json_output(&summary, &opts.csv, &mail))
    } else {
        reply::text(200, report::text_output(&summary, &opts.csv, &mail))
    })
}

fn options(args: &Args) -> Result<Options, Failure> {
    // A misspelt flag must not silently change what the run does.
    args.only_flags(&["--csv", "--threshold"], &["--verbose", "--json"], USAGE)?;
    let csv = args
        .value("--csv")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| usage("missing --csv <file>"))?;
    let threshold = args
        .value("--threshold")
        .ok_or_else(|| usage("missing --threshold <number>"))?;
    Ok(Options {
        csv: csv.to_string(),
        threshold: reconcile::parse_threshold(threshold).map_err(|e| usage(&e))?,
        verbose: args.flag("--verbose"),
        json: args.flag("--json"),
    })
}

fn usage(message: &str) -> Failure {
    reply::fail(400, format!("{message}\n{USAGE}"))
}

fn file_error(e: neo_ops_sdk::Error) -> Failure {
    let status = match e.code {
        ErrorCode::Denied => 403,
        code => reply::status_of(code),
    };
    reply::fail(status, e.message)
}

fn reconcile_error(path: &str, e: reconcile::Error) -> Failure {
    let status = match e {
        reconcile::Error::Io(_) => 500,
        _ => 400,
    };
    reply::fail(status, format!("{path}: {e}"))
}

/// Logs rows as they stream by: listed skips at warn, everything at debug
/// with `--verbose`. Nothing is kept here.
struct Logger {
    verbose: bool,
}

impl Observer for Logger {
    /// Only `--verbose` logs every row; otherwise rows cost nothing here.
    fn wants_every_row(&self) -> bool {
        self.verbose
    }

    /// The host throttles these further (a bar, or a line every 2 s).
    fn progress(&mut self, rows_read: u64) {
        log::progress(rows_read, None, "rows read");
    }

    fn row(&mut self, row: &Row, flagged: bool) {
        if self.verbose {
            let fields = [
                ("line".to_string(), row.line.to_string()),
                ("item".to_string(), row.item.clone()),
                ("variance".to_string(), row.variance.to_string()),
                ("flagged".to_string(), flagged.to_string()),
            ];
            log::log(Level::Debug, "row", &fields);
        }
    }

    fn skipped(&mut self, skip: &Skip, listed: bool) {
        let level = if listed {
            Level::Warn
        } else if self.verbose {
            Level::Debug
        } else {
            return;
        };
        let message = format!("line {}: {} (row skipped)", skip.line, skip.reason);
        log::log(level, &message, &[("line".into(), skip.line.to_string())]);
    }
}

fn log_summary(s: &Summary, path: &str) {
    if s.skips_not_listed() > 0 {
        neo_ops_sdk::warn(&format!(
            "{} more invalid rows skipped (only the first {} are listed)",
            s.skips_not_listed(),
            reconcile::LISTED_SKIPS
        ));
    }
    let fields = [
        ("csv".to_string(), path.to_string()),
        ("rows_read".to_string(), s.rows_read.to_string()),
        ("skipped".to_string(), s.skipped.to_string()),
        ("flagged".to_string(), s.flagged.to_string()),
    ];
    log::log(Level::Info, "stock vs KOT reconciled", &fields);
}

/// One email for all flagged rows; none when nothing crossed the threshold.
fn notify(s: &Summary, path: &str, dry_run: bool) -> Result<Mail, Failure> {
    if s.flagged == 0 {
        return Ok(Mail::NotNeeded);
    }
    let to = ops_recipients()?;
    if dry_run {
        return Ok(Mail::DryRun { to });
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let message = mail::Message {
        to: to.clone(),
        cc: Vec::new(),
        subject: report::subject(s, name),
        text: report::email_text(s, name),
        html: Some(report::email_html(s, name)),
        attachments: Vec::new(),
    };
    let message_id = mail::send(&message).map_err(|e| {
        reply::fail(
            reply::status_of(e.code),
            format!(
                "{} rows flagged but emailing {} failed: {}",
                s.flagged,
                to.join(", "),
                e.message
            ),
        )
    })?;
    if neo_ops_sdk::backends::goes_to_the_outbox() {
        return Ok(Mail::Outbox { to, message_id });
    }
    Ok(Mail::Sent { to, message_id })
}

/// `ops_email` from the manifest's config, else `OPS_EMAIL`, else the default;
/// a comma-separated list is several recipients.
fn ops_recipients() -> Result<Vec<String>, Failure> {
    Ok(config::list_from(
        "ops_email",
        "OPS_EMAIL",
        DEFAULT_OPS_EMAIL,
    ))
}

neo_ops_sdk::export_plugin!(StockKotReconcile);
