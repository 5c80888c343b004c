//! Test alert (spec "Test Alert"): `emit-test-alert --message "Test alert"`
//! sends a synthetic alert down every paging path — Slack `#ops`, the ops
//! mailbox and, when configured, Alertmanager — and reports each path's
//! result. Any configured path failing fails the run, and so does a
//! scheduled run without Slack: the monthly alert exists to prove the
//! paging paths work, so one that was never set up is a failure then.

mod channels;
mod options;
mod report;
mod settings;

use channels::Alert;
use neo_ops_sdk::{Failure, Invocation, Output, Plugin, ScheduleEvent, args::Args, reply, time};
use options::Options;
use report::{ChannelResult, Report};
use settings::{Settings, Target};

struct EmitTestAlert;

impl Plugin for EmitTestAlert {
    const DRY_RUN: bool = true;
    const USAGE: &'static str = options::USAGE;

    fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
        send(inv, args, "neo-ops run".to_string(), false)
    }

    fn schedule(inv: &Invocation, ev: &ScheduleEvent) -> Result<Output, Failure> {
        let by = format!("schedule \"{}\" ({})", ev.cron, ev.time_zone);
        send(inv, &Args::new(&ev.args), by, true)
    }
}

/// The alert down every path; `by` says who or what sent it; `scheduled`
/// runs need Slack configured.
fn send(inv: &Invocation, args: &Args, by: String, scheduled: bool) -> Result<Output, Failure> {
    let opts = Options::parse(args, inv)?;
    let by = inv.principal.as_ref().map(|p| p.name.clone()).unwrap_or(by);
    let alert = Alert {
        message: &opts.message,
        severity: &opts.severity,
        id: &inv.request_id,
        by: &by,
        now_micros: time::now_micros(),
    };
    let report = Report {
        message: &opts.message,
        id: &inv.request_id,
        results: emit(&alert, &Settings::load(), opts.dry_run, scheduled),
    };
    finish(&report, opts.json)
}

/// Every channel is tried, whatever happened to the others.
fn emit(alert: &Alert, settings: &Settings, dry_run: bool, scheduled: bool) -> Vec<ChannelResult> {
    vec![
        slack(alert, settings, dry_run, scheduled),
        email(alert, settings, dry_run),
        alertmanager(alert, &settings.alertmanager, dry_run),
    ]
}

fn slack(alert: &Alert, settings: &Settings, dry_run: bool, scheduled: bool) -> ChannelResult {
    let url = match &settings.slack {
        Ok(url) => url,
        Err(why) if scheduled => {
            let why = format!("{why}: the scheduled test alert must reach Slack #ops");
            return ChannelResult::from_send("slack", Err(why));
        }
        Err(why) => return ChannelResult::skipped("slack", why.clone()),
    };
    let payload = channels::slack_payload(alert, &settings.slack_channel);
    if dry_run {
        let detail = format!("would post to {}", channels::redact_url(url));
        return ChannelResult::dry_run("slack", detail, payload);
    }
    ChannelResult::from_send("slack", channels::send_slack(url, &payload))
}

fn email(alert: &Alert, settings: &Settings, dry_run: bool) -> ChannelResult {
    let message = channels::email_message(alert, &settings.ops_email);
    if dry_run {
        let detail = format!("would send to {}", message.to.join(", "));
        let payload = neo_ops_sdk::serde_json::json!({
            "to": message.to, "subject": message.subject, "text": message.text,
        });
        return ChannelResult::dry_run("email", detail, payload);
    }
    ChannelResult::from_send("email", channels::send_email(&message))
}

fn alertmanager(alert: &Alert, target: &Target, dry_run: bool) -> ChannelResult {
    let base = match target {
        Ok(base) => base,
        Err(why) => return ChannelResult::skipped("alertmanager", why.clone()),
    };
    let payload = channels::alertmanager_payload(alert);
    if dry_run {
        let url = channels::alertmanager_endpoint(base);
        let detail = format!("would post to {}", channels::redact_url(&url));
        return ChannelResult::dry_run("alertmanager", detail, payload);
    }
    ChannelResult::from_send("alertmanager", channels::send_alertmanager(base, &payload))
}

/// The report on success; a failure naming the failed channels otherwise,
/// carrying the whole report so the operator sees what did get through.
/// With `--json` a failure is the same document (`"ok": false`) with status
/// 502, so a script parses one shape either way (and the run still fails).
fn finish(report: &Report, json: bool) -> Result<Output, Failure> {
    let failed = report.failed();
    if json {
        let status = if failed.is_empty() { 200 } else { 502 };
        return Ok(reply::json(status, &report.json()));
    }
    if failed.is_empty() {
        return Ok(reply::text(200, report.text()));
    }
    Err(reply::fail(
        502,
        format!(
            "test alert failed on {}\n{}",
            failed.join(", "),
            report.text().trim_end()
        ),
    ))
}

neo_ops_sdk::export_plugin!(EmitTestAlert);
