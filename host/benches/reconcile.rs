//! `cargo bench --bench reconcile`: the stock-vs-KOT reconciliation of a
//! 1,000,000-row CSV by the plugin (`neo-ops run stock-kot-reconcile`, the
//! real binary) against the same parsing and threshold logic compiled
//! natively (the plugin's host-independent modules, included below), each in
//! its own process so wall time and peak RSS compare like for like.

#[path = "../../plugins/stock-kot-reconcile/src/csv.rs"]
#[allow(dead_code)]
mod csv;
#[path = "../../plugins/stock-kot-reconcile/src/reconcile.rs"]
#[allow(dead_code)]
mod reconcile;

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ROWS: usize = 1_000_000;
const THRESHOLD: &str = "5";

struct Quiet;
impl reconcile::Observer for Quiet {}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--native") {
        // The native contender, in its own process.
        let file = std::fs::File::open(&args[i + 1]).unwrap();
        let threshold = reconcile::parse_threshold(THRESHOLD).unwrap();
        let summary = reconcile::reconcile(
            BufReader::with_capacity(64 << 10, file),
            threshold,
            &mut Quiet,
        )
        .unwrap();
        println!(
            "read {} skipped {} flagged {}",
            summary.rows_read, summary.skipped, summary.flagged
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("report.csv");
    write_csv(&csv_path);
    let size = std::fs::metadata(&csv_path).unwrap().len();
    println!(
        "stock-kot-reconcile benchmark: {ROWS} rows ({:.1} MB), threshold {THRESHOLD}",
        size as f64 / 1e6
    );

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins.toml");
    let data = dir.path().join("data");
    // Warm the component cache so compilation is not timed.
    run_plugin(&manifest, &data, &csv_path);
    let (mut native, mut plugin) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        native.push(measure(
            Command::new(std::env::current_exe().unwrap())
                .arg("--native")
                .arg(&csv_path),
        ));
        plugin.push(run_plugin(&manifest, &data, &csv_path));
    }
    let best = |v: &[(Duration, u64, String)]| v.iter().min_by_key(|r| r.0).cloned().unwrap();
    let (nt, nrss, nout) = best(&native);
    let (pt, prss, pout) = best(&plugin);
    println!(
        "native  {:>8.0} ms  peak RSS {:>6.1} MB  ({})",
        nt.as_secs_f64() * 1e3,
        nrss as f64 / 1024.0,
        nout.trim()
    );
    println!(
        "plugin  {:>8.0} ms  peak RSS {:>6.1} MB  ({})",
        pt.as_secs_f64() * 1e3,
        prss as f64 / 1024.0,
        pout.lines()
            .find(|l| l.contains("read"))
            .unwrap_or("")
            .trim()
    );
    println!(
        "ratio plugin/native {:.2}x (goal <= 1.5x); best of 3, each a fresh process",
        pt.as_secs_f64() / nt.as_secs_f64()
    );
}

fn run_plugin(manifest: &Path, data: &Path, csv: &Path) -> (Duration, u64, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_neo-ops"));
    cmd.arg("--manifest")
        .arg(manifest)
        .arg("--data-dir")
        .arg(data)
        .args(["run", "stock-kot-reconcile", "--csv"])
        .arg(csv)
        .args(["--threshold", THRESHOLD])
        .env_remove("POSTGRES_MASTER_URL")
        .env_remove("POSTGRES_TENANT_DSN_TEMPLATE")
        .env_remove("REDIS_URL")
        .env_remove("SMTP_HOST")
        .env("NEO_OPS_LOG", "error");
    measure(&mut cmd)
}

/// Wall time, peak RSS (KiB) and stdout of a child process.
// The child is reaped by `wait4`, which also reports its peak RSS.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> (Duration, u64, String) {
    use std::os::unix::process::ExitStatusExt;
    let started = Instant::now();
    let child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `usage` is a valid out-pointer.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let took = started.elapsed();
    assert_eq!(waited, pid);
    let exit = std::process::ExitStatus::from_raw(status);
    let mut out = String::new();
    use std::io::Read;
    child.stdout.unwrap().read_to_string(&mut out).unwrap();
    assert!(
        exit.success() || exit.code() == Some(0),
        "{cmd:?} failed: {out}"
    );
    (took, usage.ru_maxrss as u64, out)
}

fn write_csv(path: &Path) {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(w, "item,sold_qty,KOT_cnt,variance").unwrap();
    let mut x: u64 = 12345;
    for i in 0..ROWS {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let sold = (x >> 33) % 200;
        let variance = ((x >> 20) % 15) as i64 - 7; // |v| > 5 for about 2 in 15 rows
        let kot = sold as i64 - variance;
        if i % 1000 == 999 {
            writeln!(w, "\"Item {i}, large\",{sold},oops,{variance}").unwrap();
        } else {
            writeln!(w, "Item {i},{sold},{kot},{variance}").unwrap();
        }
    }
}
