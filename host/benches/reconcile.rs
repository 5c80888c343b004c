//! `cargo bench --bench reconcile`: the stock-vs-KOT reconciliation of a
//! 1,000,000-row CSV by the plugin (`neo-ops run stock-kot-reconcile`, the
//! real binary) against (a) a plain native program on the `csv` crate doing
//! the same check, (b) the plugin's own parsing and threshold logic compiled
//! natively (its host-independent modules, included below) and (c) the
//! spec's Python script (`../shared/bench/reconcile_reference.py`, or
//! `NEO_OPS_PY_REFERENCE`; left out when absent), each in its own process
//! so wall time and peak RSS compare like for like.

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
    if let Some(i) = args.iter().position(|a| a == "--csv-crate") {
        let (read, skipped, flagged) = csv_crate(Path::new(&args[i + 1]));
        println!("read {read} skipped {skipped} flagged {flagged}");
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
    let python = std::env::var_os("NEO_OPS_PY_REFERENCE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/reconcile_reference.py")
        });
    let python = python.exists().then_some(python);
    let (mut native, mut plugin, mut crate_csv, mut py) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let me = std::env::current_exe().unwrap();
    for _ in 0..3 {
        native.push(measure(Command::new(&me).arg("--native").arg(&csv_path)));
        crate_csv.push(measure(Command::new(&me).arg("--csv-crate").arg(&csv_path)));
        plugin.push(run_plugin(&manifest, &data, &csv_path));
        if let Some(script) = &python {
            py.push(measure(
                Command::new("python3")
                    .arg(script)
                    .arg("--csv")
                    .arg(&csv_path)
                    .args(["--threshold", THRESHOLD])
                    .stderr(std::process::Stdio::null()),
            ));
        }
    }
    let best = |v: &[(Duration, u64, String)]| v.iter().min_by_key(|r| r.0).cloned().unwrap();
    let (nt, nrss, nout) = best(&native);
    let (pt, prss, pout) = best(&plugin);
    let (ct, crss, cout) = best(&crate_csv);
    assert_eq!(cout.trim(), nout.trim(), "both native programs count alike");
    println!(
        "csv crate {:>6.0} ms  peak RSS {:>6.1} MB  ({})",
        ct.as_secs_f64() * 1e3,
        crss as f64 / 1024.0,
        cout.trim()
    );
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
        "ratio plugin/same parser native {:.2}x; best of 3, each a fresh process",
        pt.as_secs_f64() / nt.as_secs_f64()
    );
    println!(
        "ratio plugin/csv crate {:.2}x (goal <= 1.3x); plugin peak RSS {:.1} MB (goal <= 32 MiB)",
        pt.as_secs_f64() / ct.as_secs_f64(),
        prss as f64 / 1024.0
    );
    if !py.is_empty() {
        let (yt, yrss, yout) = best(&py);
        println!(
            "python  {:>8.0} ms  peak RSS {:>6.1} MB  ({}); plugin is {:.1}x faster (goal >= 10x)",
            yt.as_secs_f64() * 1e3,
            yrss as f64 / 1024.0,
            yout.trim(),
            yt.as_secs_f64() / pt.as_secs_f64()
        );
    }
}

/// The plain native program the plugin is measured against: the `csv`
/// crate's byte records, the four columns found by name, a row skipped when
/// it has the wrong number of fields, an empty item or a number that does
/// not parse, and flagged when |variance| is above the threshold.
fn csv_crate(path: &Path) -> (u64, u64, u64) {
    let threshold: f64 = THRESHOLD.parse().unwrap();
    let mut reader = ::csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .unwrap();
    let header = reader.byte_headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name.as_bytes()).unwrap();
    let (item, sold, kot, variance) = (
        column("item"),
        column("sold_qty"),
        column("KOT_cnt"),
        column("variance"),
    );
    let number = |field: &[u8]| -> Option<f64> {
        let v: f64 = std::str::from_utf8(field).ok()?.trim().parse().ok()?;
        v.is_finite().then_some(v)
    };
    let (mut read, mut skipped, mut flagged) = (0, 0, 0);
    let mut record = ::csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).unwrap() {
        read += 1;
        let parsed = (record.len() == header.len())
            .then(|| {
                (!record[item].trim_ascii().is_empty()).then_some(())?;
                let _ = (number(&record[sold])?, number(&record[kot])?);
                number(&record[variance])
            })
            .flatten();
        match parsed {
            Some(v) if v.abs() > threshold => flagged += 1,
            Some(_) => {}
            None => skipped += 1,
        }
    }
    (read, skipped, flagged)
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
