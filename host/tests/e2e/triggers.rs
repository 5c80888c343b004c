//! Triggers: schedules fire once per slot across replicas, queue jobs are
//! consumed once (failures dead-lettered), routes enforce their role with the
//! spec's exact 403 body.

use crate::support;

use neo_ops::auth;
use neo_ops::backends::db::Value;
use neo_ops::backends::queue;
use neo_ops::manifest::Role;
use std::collections::HashMap;
use std::time::Duration;
use support::{Backend, Deployment};

const SCHEDULED: &str = r#"
[plugins.ticker]
component = "test_probe.wasm"
schedules = [{ cron = "* * * * * *", tz = "Asia/Kolkata" }]
grants = { kv = ["probe:"] }
"#;

/// The `runs` rows of the `ticker` plugin, slot order, once the servers stopped.
async fn ticker_runs(dep: &Deployment, columns: &str) -> neo_ops::backends::db::RowSet {
    let check = neo_ops::services::Services::connect(dep.settings("a"))
        .await
        .unwrap();
    check
        .db
        .master()
        .query(
            &format!("SELECT {columns} FROM runs WHERE plugin = 'ticker' ORDER BY slot"),
            &[],
        )
        .await
        .unwrap()
}

async fn schedule_fires_once_per_slot(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let a = dep.start(SCHEDULED, "a").await;
    let b = dep.start(SCHEDULED, "b").await;
    // Every-second schedule: 4.5 s leaves room for at least three slots even on a busy machine.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let kv_a = a.services.clone();
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    let rows = ticker_runs(&dep, "slot, replica, status").await;
    assert!(
        rows.rows.len() >= 3,
        "a slot per second fired: {:?}",
        rows.rows
    );
    let mut per_slot: HashMap<String, usize> = HashMap::new();
    for r in &rows.rows {
        let Value::Text(slot) = &r[0] else {
            panic!("slot is text")
        };
        *per_slot.entry(slot.clone()).or_default() += 1;
        assert!(
            matches!(&r[2], Value::Text(s) if s == "ok"),
            "run finished ok: {r:?}"
        );
    }
    assert!(
        per_slot.values().all(|&n| n == 1),
        "each slot ran once: {per_slot:?}"
    );
    if backend == Backend::Real {
        // Both replicas share Redis: every slot's plugin-side counter is exactly 1.
        for slot in per_slot.keys() {
            let micros = chrono::DateTime::parse_from_rfc3339(slot)
                .unwrap()
                .timestamp_micros();
            let n = kv_a.kv.get(&format!("probe:slot:{micros}")).await.unwrap();
            assert_eq!(n.as_deref(), Some(&b"1"[..]), "slot {slot} invoked once");
        }
    }
}

on_both_backends!(schedules, schedule_fires_once_per_slot);

/// Shutdown of a replica with no connection open, while a schedule run is
/// going: the run finishes and is recorded before the process stops. (The
/// accept loop ends the moment shutdown is asked for; taken for the reason
/// to stop, it skipped the drain, and the run stayed `running` for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_replica_drains_its_schedule_runs_on_shutdown() {
    let dep = Deployment::new(Backend::Embedded).await;
    let slow = SCHEDULED.replace(
        r#"tz = "Asia/Kolkata" }]"#,
        r#"tz = "Asia/Kolkata", args = ["sleep:800"] }]"#,
    );
    for round in 0..3 {
        let server = dep.start(&slow, &format!("r{round}")).await;
        let running = || async {
            let rows = server
                .master()
                .query(
                    "SELECT COUNT(*) FROM runs WHERE plugin = 'ticker' AND status = 'running'",
                    &[],
                )
                .await
                .unwrap();
            rows.rows[0][0] != Value::Int(0)
        };
        support::wait_until("a scheduled run is going", running).await;
        server.stop().await.unwrap();
        let rows = ticker_runs(&dep, "status").await;
        assert!(
            rows.rows.iter().all(|r| r[0] == Value::Text("ok".into())),
            "round {round}: {:?}",
            rows.rows
        );
    }
}

/// The minute slot ten minutes ago, and a manifest whose `ticker` fires
/// at it once a day.
fn a_slot_ten_minutes_ago() -> (chrono::DateTime<chrono::Utc>, String) {
    let slot = chrono::Utc::now() - chrono::Duration::minutes(10);
    let slot = chrono::DateTime::from_timestamp(slot.timestamp() / 60 * 60, 0).unwrap();
    let manifest = format!(
        "[plugins.ticker]\ncomponent = \"test_probe.wasm\"\n\
         schedules = [{{ cron = \"{}\" }}]\ngrants = {{ kv = [\"probe:\"] }}\n",
        slot.format("%M %H * * *")
    );
    (slot, manifest)
}

/// A slot due while no replica was up (a restart across 03:00) fires once
/// when `serve` starts, within the catch-up; a replica starting after it
/// does not run it again. Before, the first set started from its own
/// start, and that night's purge or digest never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_missed_while_down_runs_at_start() {
    let dep = Deployment::new(Backend::Embedded).await;
    let (slot, manifest) = a_slot_ten_minutes_ago();
    let start = |replica: &'static str| {
        let mut settings = dep.settings(replica);
        settings.schedule_catch_up = Duration::from_secs(3600);
        let manifest = manifest.clone();
        let dep = &dep;
        async move {
            let services = neo_ops::services::Services::connect(settings)
                .await
                .unwrap();
            dep.start_with_services(&manifest, services).await
        }
    };
    let a = start("a").await;
    let want = vec![vec![
        Value::Text(slot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        Value::Text("ok".into()),
    ]];
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ticker_runs(&dep, "slot, status").await.rows != want {
        assert!(
            std::time::Instant::now() < deadline,
            "the missed slot never ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b = start("b").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ticker_runs(&dep, "slot, status").await.rows, want, "once");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

const NIGHTLY: &str = r#"
[plugins.ticker]
component = "test_probe.wasm"
schedules = [{ cron = "0 3 * * *" }]
grants = { kv = ["probe:"] }
"#;

/// A slot still waiting for a plugin slot when the process shuts down
/// gives its claim back, so the next start's catch-up runs it. Before, the
/// claim stayed (marked interrupted) and that night's run never happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_waiting_at_shutdown_runs_at_the_next_start() {
    let dep = Deployment::new(Backend::Embedded).await;
    let (slot, manifest) = a_slot_ten_minutes_ago();
    let services = || async {
        let mut settings = dep.settings("a");
        settings.schedule_catch_up = Duration::from_secs(3600);
        settings.max_instances = 1;
        neo_ops::services::Services::connect(settings)
            .await
            .unwrap()
    };
    let loaded = neo_ops::manifest::load(&dep.manifest(&manifest)).unwrap();
    let runtime =
        std::sync::Arc::new(neo_ops::runtime::Runtime::load(&loaded, services().await).unwrap());
    // The only plugin slot taken (an operator's long command).
    let held = runtime
        .admission
        .acquire(neo_ops::runtime::admission::Class::Operator)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(neo_ops::server::run(listener, runtime, shutdown.clone()));
    support::wait_until(
        "the slot is claimed and waits for a plugin slot",
        || async {
            ticker_runs(&dep, "status").await.rows == vec![vec![Value::Text("running".into())]]
        },
    )
    .await;
    shutdown.cancel();
    serving.await.unwrap().unwrap();
    drop(held);
    assert!(
        ticker_runs(&dep, "status").await.rows.is_empty(),
        "the claim was given back"
    );

    let server = dep.start_with_services(&manifest, services().await).await;
    let want = vec![vec![
        Value::Text(slot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        Value::Text("ok".into()),
    ]];
    support::wait_until("the next start ran the slot", || async {
        ticker_runs(&dep, "slot, status").await.rows == want
    })
    .await;
    server.stop().await.unwrap();
}

/// The run history stays true and bounded: at start a replica marks the
/// runs an earlier life of its name left going as interrupted; another
/// replica's are left at one look whether or not a live process holds its
/// name (a departed one's go at the second look, ten minutes on: a process
/// of an older version holds no name); finished runs older than 30 days
/// are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_run_history_is_tidied() {
    let dep = Deployment::new(Backend::Real).await;
    let services = neo_ops::services::Services::connect(dep.settings("a"))
        .await
        .unwrap();
    let me = services.settings.replica.clone();
    let live = format!("{}-live", dep.id);
    let now = chrono::Utc::now();
    let rows = [
        (
            "crashed-me",
            me.as_str(),
            "running",
            now - chrono::Duration::hours(1),
        ),
        (
            "gone",
            "ghost-replica",
            "running",
            now - chrono::Duration::hours(1),
        ),
        (
            "live",
            live.as_str(),
            "running",
            now - chrono::Duration::hours(1),
        ),
        (
            "old",
            "ghost-replica",
            "ok",
            now - chrono::Duration::days(40),
        ),
        (
            "recent",
            "ghost-replica",
            "ok",
            now - chrono::Duration::days(1),
        ),
    ];
    for (plugin, replica, status, started) in rows {
        services
            .db
            .master()
            .execute(
                "INSERT INTO runs (plugin, trigger, slot, replica, status, started_at) \
                 VALUES ($1, 'schedule:0', $2, $3, $4, $5)",
                &[
                    Value::Text(plugin.into()),
                    Value::Text(started.to_rfc3339()),
                    Value::Text(replica.into()),
                    Value::Text(status.into()),
                    Value::Timestamp(started.timestamp_micros()),
                ],
            )
            .await
            .unwrap();
    }
    // The live replica holds its name.
    let claim = format!("{}replica:{live}", neo_ops::backends::kv::HOST_NAMESPACE);
    services
        .kv
        .set(&claim, b"its-token", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let server = dep.start_with_services(QUEUED, services.clone()).await;
    let statuses = || async {
        let rows = services
            .db
            .master()
            .query("SELECT plugin, status FROM runs ORDER BY plugin", &[])
            .await
            .unwrap();
        rows.rows
            .into_iter()
            .map(|r| match (&r[0], &r[1]) {
                (Value::Text(p), Value::Text(s)) => format!("{p}={s}"),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let want = [
        "crashed-me=interrupted",
        "gone=running",
        "live=running",
        "recent=ok",
    ];
    support::wait_until("the history is tidied", || async {
        statuses().await == want
    })
    .await;
    server.stop().await.unwrap();
}

/// A slot due while the master database is away is claimed once it is
/// back, and runs once. Before, the failed claim used the slot up on every
/// replica: that night's purge or digest never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_due_during_a_database_outage_runs_when_it_returns() {
    let dep = Deployment::new(Backend::Real).await;
    let (server, pg) = dep.start_with_master_proxy(NIGHTLY).await;
    let slot = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap();
    pg.set_up(false);
    let fired = tokio::spawn({
        let runtime = server.runtime.clone();
        async move { neo_ops::triggers::schedule::fire(&runtime, "ticker", 0, slot).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!fired.is_finished(), "the slot waits for the database");
    pg.set_up(true);
    tokio::time::timeout(Duration::from_secs(30), fired)
        .await
        .expect("the slot ran once the database was back")
        .unwrap();
    let key = format!("probe:slot:{}", slot.timestamp_micros());
    let n = server.services.kv.get(&key).await.unwrap();
    assert_eq!(n.as_deref(), Some(&b"1"[..]), "the slot ran once");
    server.stop().await.unwrap();
    let rows = ticker_runs(&dep, "status").await.rows;
    assert_eq!(rows, vec![vec![Value::Text("ok".into())]]);
}

/// A scheduled run whose plugin answers with an error status (as
/// emit-test-alert's `--json` report of a failed channel does) is recorded
/// as failed, not ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_answering_an_error_status_is_recorded_as_failed() {
    let dep = Deployment::new(Backend::Embedded).await;
    let manifest = r#"
[plugins.ticker]
component = "test_faults.wasm"
schedules = [{ cron = "0 3 * * *", args = ["status-502"] }]
"#;
    let server = dep.start(manifest, "a").await;
    let slot = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap();
    neo_ops::triggers::schedule::fire(&server.runtime, "ticker", 0, slot).await;
    server.stop().await.unwrap();
    let rows = ticker_runs(&dep, "status, error").await.rows;
    assert_eq!(
        rows,
        vec![vec![
            Value::Text("error".into()),
            Value::Text("the plugin answered status 502".into())
        ]]
    );
}

/// One slot fired twice in one process at once (the set a reload stops and
/// the one taking over, both seeing it due) while the master database is
/// away runs once. Before, both claims failed, one then took the slot, and
/// the other took that claim for its own lost answer (same replica), so
/// both ran it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_fired_twice_in_one_process_during_an_outage_runs_once() {
    let dep = Deployment::new(Backend::Real).await;
    let (server, pg) = dep.start_with_master_proxy(NIGHTLY).await;
    let slot = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap();
    pg.set_up(false);
    let fire = || {
        let runtime = server.runtime.clone();
        tokio::spawn(
            async move { neo_ops::triggers::schedule::fire(&runtime, "ticker", 0, slot).await },
        )
    };
    let (first, second) = (fire(), fire());
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.set_up(true);
    for fired in [first, second] {
        tokio::time::timeout(Duration::from_secs(30), fired)
            .await
            .expect("the slot was settled once the database was back")
            .unwrap();
    }
    let key = format!("probe:slot:{}", slot.timestamp_micros());
    let n = server.services.kv.get(&key).await.unwrap();
    assert_eq!(n.as_deref(), Some(&b"1"[..]), "the slot ran once");
    server.stop().await.unwrap();
}

/// A run that ends while the master database is away has its result
/// recorded once it is back: before, one try was made, and a run that
/// succeeded during a failover stayed `running`, then `interrupted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_ending_during_a_database_outage_is_recorded_when_it_returns() {
    let dep = Deployment::new(Backend::Real).await;
    let manifest = NIGHTLY.replace(
        r#"cron = "0 3 * * *""#,
        r#"cron = "0 3 * * *", args = ["sleep:1500"]"#,
    );
    let (server, pg) = dep.start_with_master_proxy(&manifest).await;
    let slot = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap();
    let fired = tokio::spawn({
        let runtime = server.runtime.clone();
        async move { neo_ops::triggers::schedule::fire(&runtime, "ticker", 0, slot).await }
    });
    // Claimed, then the database goes while the run sleeps.
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg.set_up(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!fired.is_finished(), "the result waits for the database");
    pg.set_up(true);
    tokio::time::timeout(Duration::from_secs(30), fired)
        .await
        .expect("the result was recorded once the database was back")
        .unwrap();
    server.stop().await.unwrap();
    let rows = ticker_runs(&dep, "status").await.rows;
    assert_eq!(rows, vec![vec![Value::Text("ok".into())]]);
}

const QUEUED: &str = r#"
[plugins.worker]
component = "test_probe.wasm"
queue = { name = "jobs", max_attempts = 2 }
grants = { kv = ["probe:"] }
"#;

async fn queue_jobs_are_consumed_once(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let a = dep.start(QUEUED, "a").await;
    // Real backends share Redis, so a second replica competes for the jobs.
    let b = match backend {
        Backend::Real => Some(dep.start(QUEUED, "b").await),
        Backend::Embedded => None,
    };
    let kv = &a.services.kv;
    let payloads: Vec<String> = (0..40).map(|i| format!("job-{i}")).collect();
    for p in &payloads {
        queue::enqueue(kv, "jobs", None, p).await.unwrap();
    }
    // Failed: raised, and answered with an error status (the 400 is a bad
    // job, dead at once; the 503 is tried again).
    for failing in ["fail-me", "answer-503", "answer-400"] {
        queue::enqueue(kv, "jobs", None, failing).await.unwrap();
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = kv.list_len(&queue::dead_letter_key("jobs")).await.unwrap() == 3
            && kv.list_len(&queue::queue_key("jobs")).await.unwrap() == 0;
        if done || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in &payloads {
        let n = kv.get(&format!("probe:job:{p}")).await.unwrap();
        assert_eq!(n.as_deref(), Some(&b"1"[..]), "{p} consumed exactly once");
    }
    let dead = kv
        .list_range(&queue::dead_letter_key("jobs"), 0, -1)
        .await
        .unwrap();
    let mut dead: Vec<queue::Job> = dead
        .iter()
        .map(|d| serde_json::from_slice(d).unwrap())
        .collect();
    dead.sort_by(|a, b| a.payload.cmp(&b.payload));
    let seen: Vec<(&str, u32)> = dead
        .iter()
        .map(|j| (j.payload.as_str(), j.attempts))
        .collect();
    assert_eq!(
        seen,
        [("answer-400", 1), ("answer-503", 2), ("fail-me", 2)],
        "{dead:?}"
    );
    let error = |i: usize| dead[i].last_error.clone().unwrap();
    assert!(error(0).contains("answered status 400"), "{}", error(0));
    assert!(error(1).contains("answered 503 on purpose"), "{}", error(1));
    assert!(error(2).contains("failed on purpose"));
    if let Some(b) = b {
        b.stop().await.unwrap();
    }
    a.stop().await.unwrap();
}

on_both_backends!(queues, queue_jobs_are_consumed_once);

/// A replica that died mid-job leaves the job in its processing list; a live
/// consumer re-queues it (the dead one's liveness key has expired) and it runs.
async fn a_dead_replicas_jobs_are_recovered(backend: Backend) {
    let dep = Deployment::new(backend).await;
    // Set the scene with the deployment's own kv before any consumer runs.
    let services = neo_ops::services::Services::connect(dep.settings("setup"))
        .await
        .unwrap();
    let kv = &services.kv;
    // Claimed on its first attempt when the ghost died: it runs again. The
    // poison job had already killed a replica once: its second interrupted
    // run is its last attempt, so it is dead-lettered, never run again.
    let job = |id: &str, payload: &str, attempts| queue::Job {
        id: id.into(),
        queue: "jobs".into(),
        payload: payload.into(),
        attempts,
        enqueued_at: chrono::Utc::now().to_rfc3339(),
        last_error: None,
        tenant: None,
        dead_at: None,
        not_before_ms: None,
    };
    let in_flight = [
        job("orphan-1", "orphaned-job", 0),
        job("poison-1", "poison", 1),
    ];
    kv.list_push(
        &format!(
            "{}queue:jobs:processing:ghost",
            neo_ops::backends::kv::HOST_NAMESPACE
        ),
        &in_flight
            .iter()
            .map(|j| serde_json::to_vec(j).unwrap())
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    kv.list_push(&queue::consumers_key("jobs"), &[b"ghost".to_vec()])
        .await
        .unwrap();
    // The embedded kv lives in the process that opened it: hand the server the same one.
    let server = match backend {
        Backend::Embedded => dep.start_with_services(QUEUED, services.clone()).await,
        Backend::Real => dep.start(QUEUED, "a").await,
    };
    let kv = &server.services.kv;
    // Presumed dead after two looks 15 s apart.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while kv.get("probe:job:orphaned-job").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead replica's job was never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ghosts = kv
        .list_range(&queue::consumers_key("jobs"), 0, -1)
        .await
        .unwrap();
    assert!(
        !ghosts.contains(&b"ghost".to_vec()),
        "the dead replica is forgotten"
    );
    let dead = kv
        .list_range(&queue::dead_letter_key("jobs"), 0, -1)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let poison: queue::Job = serde_json::from_slice(&dead[0]).unwrap();
    assert_eq!((poison.id.as_str(), poison.attempts), ("poison-1", 2));
    assert_eq!(
        poison.last_error.as_deref(),
        Some("replica \"ghost\" stopped while running it")
    );
    assert!(
        kv.get("probe:job:poison").await.unwrap().is_none(),
        "never run again"
    );
    server.stop().await.unwrap();
}

on_both_backends!(orphans, a_dead_replicas_jobs_are_recovered);

/// A replica's name keys its in-flight lists and schedule runs: a second
/// process started under a live replica's name is refused before it takes
/// that replica's running jobs back onto the queue (they would run twice);
/// a name a crashed process left is taken over once its claim goes
/// unrefreshed; a name taken while serving fails readiness until it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_live_process_per_replica_name() {
    let dep = Deployment::new(Backend::Real).await;
    let a = dep.start(QUEUED, "a").await;
    let services = a.services.clone();
    let kv = &services.kv;
    let name = services.settings.replica.clone();
    support::wait_until("replica a serves", || async {
        a.http
            .get(a.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let job = |id: &str, payload: &str| queue::Job {
        id: id.into(),
        queue: "jobs".into(),
        payload: payload.into(),
        attempts: 0,
        enqueued_at: chrono::Utc::now().to_rfc3339(),
        last_error: None,
        tenant: None,
        dead_at: None,
        not_before_ms: None,
    };
    // Readiness comes before the consumer has announced itself, which
    // takes back what its list holds then (an earlier life's jobs): the
    // job is planted once the consumer has run one, so after that.
    let first = job("warm-1", "warm");
    kv.list_push(&queue::queue_key("jobs"), &[first.entry()])
        .await
        .unwrap();
    let a_list = queue::processing_key("jobs", &name);
    support::wait_until("replica a's consumer runs a job", || async {
        kv.get("probe:job:warm").await.is_ok_and(|v| v.is_some())
            && kv.list_len(&a_list).await.is_ok_and(|n| n == 0)
    })
    .await;
    // A job replica a is running, as its list holds it.
    let running = job("running-1", "running");
    kv.list_push(&a_list, &[running.entry()]).await.unwrap();

    let second = neo_ops::services::Services::connect(dep.settings("a"))
        .await
        .unwrap();
    let manifest = neo_ops::manifest::load(&dep.manifest(QUEUED)).unwrap();
    let runtime = std::sync::Arc::new(neo_ops::runtime::Runtime::load(&manifest, second).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(15),
        neo_ops::server::run(listener, runtime, Default::default()),
    )
    .await
    .expect("the second start ends")
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!(
            "replica name \"{name}\" is in use by another live process"
        )),
        "{err}"
    );
    assert_eq!(
        kv.list_range(&a_list, 0, -1).await.unwrap(),
        vec![running.entry()],
        "replica a's running job stays its own"
    );
    assert_eq!(
        kv.get("probe:job:running").await.unwrap(),
        None,
        "and ran nowhere else"
    );
    kv.list_remove(&a_list, &running.entry(), 0).await.unwrap();

    // Taken while serving (two processes started while Redis was away).
    let claim = format!("{}replica:{name}", neo_ops::backends::kv::HOST_NAMESPACE);
    kv.set(&claim, b"another-process", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    support::wait_until("readiness fails while the name is taken", || async {
        let (status, body) = a.get("/readyz", None).await;
        status == 503 && body.contains("another live process has this replica's name")
    })
    .await;
    kv.delete(&claim).await.unwrap();
    support::wait_until("readiness is back with the name", || async {
        a.get("/readyz", None).await.0 == 200
    })
    .await;

    // A crashed process's claim, left to expire: the restart waits it out.
    let b_claim = format!(
        "{}replica:{}-b",
        neo_ops::backends::kv::HOST_NAMESPACE,
        dep.id
    );
    kv.set(&b_claim, b"crashed", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let b = dep.start(QUEUED, "b").await;
    support::wait_until("the restarted replica b serves", || async {
        b.http
            .get(b.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it watched the claim first"
    );
    let held = kv.get(&b_claim).await.unwrap().unwrap();
    assert_ne!(held, b"crashed".to_vec(), "replica b took the name over");

    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_eq!(
        kv.get(&claim).await.unwrap(),
        None,
        "a stop releases the name"
    );
    assert_eq!(kv.get(&b_claim).await.unwrap(), None);
}

/// An outage longer than the liveness keys last expires them all at once:
/// the first replica back must not take another's running job for a dead
/// one's before that replica's next heartbeat re-registers it. Before, it
/// re-queued the job at once and the job ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_job_outlives_every_key_expiring_at_once() {
    let dep = Deployment::new(Backend::Real).await;
    let b = dep.start(QUEUED, "b").await;
    let kv = &b.services.kv;
    queue::enqueue(kv, "jobs", None, "sleep:9000")
        .await
        .unwrap();
    let b_list = queue::processing_key("jobs", &b.services.settings.replica);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while kv.list_len(&b_list).await.unwrap() == 0 {
        assert!(std::time::Instant::now() < deadline, "b never took the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // b's key gone as if expired, and a comes back (starts) and looks.
    let b_alive = queue::alive_key("jobs", &b.services.settings.replica);
    kv.delete(&b_alive).await.unwrap();
    let a = dep.start(QUEUED, "a").await;
    // The job ends about nine seconds in; a's heartbeats look meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while kv.get("probe:job:sleep:9000").await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the job never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for a second run to have started and finished.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let runs = kv.get("probe:job:sleep:9000").await.unwrap();
    assert_eq!(runs.as_deref(), Some(&b"1"[..]), "the job ran once");
    assert_eq!(kv.list_len(&queue::queue_key("jobs")).await.unwrap(), 0);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

const SLOW_RETRY: &str = r#"
[plugins.worker]
component = "test_probe.wasm"
queue = { name = "jobs", max_attempts = 2, backoff = "2s" }
grants = { kv = ["probe:"] }
"#;

/// A job waiting for its retry does not hold up the jobs behind it.
async fn a_waiting_retry_does_not_block_the_queue(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(SLOW_RETRY, "a").await;
    let kv = &server.services.kv;
    queue::enqueue(kv, "jobs", None, "fail-me").await.unwrap();
    let later: Vec<String> = (0..5).map(|i| format!("later-{i}")).collect();
    for p in &later {
        queue::enqueue(kv, "jobs", None, p).await.unwrap();
    }
    let dead = queue::dead_letter_key("jobs");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for p in &later {
        while kv.get(&format!("probe:job:{p}")).await.unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "{p} never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        kv.list_len(&dead).await.unwrap(),
        0,
        "the later jobs ran while the failed one waited its 2s backoff"
    );
    while kv.list_len(&dead).await.unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "fail-me never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let raw = kv.list_range(&dead, 0, 0).await.unwrap();
    let job: queue::Job = serde_json::from_slice(&raw[0]).unwrap();
    assert_eq!((job.payload.as_str(), job.attempts), ("fail-me", 2));
    assert!(job.last_error.unwrap().contains("failed on purpose"));
    server.stop().await.unwrap();
}

on_both_backends!(slow_retries, a_waiting_retry_does_not_block_the_queue);

const LONG_RETRY: &str = r#"
[plugins.worker]
component = "test_probe.wasm"
queue = { name = "jobs", max_attempts = 2, backoff = "1h" }
grants = { kv = ["probe:"] }
"#;

/// Jobs waiting for their retry wait in the queue's retrying set, scored by
/// when they are due, not in the queue. Before, every consumer took each
/// one off and put it back on every pass: during a receiver's outage,
/// thousands of retries cost three Redis calls each per worker per second,
/// and a new job waited behind the whole pass. An older release's retry,
/// found waiting in the queue itself, moves to the set and is not run early.
async fn retries_wait_outside_the_queue(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let services = neo_ops::services::Services::connect(dep.settings("setup"))
        .await
        .unwrap();
    let in_an_hour = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let legacy = queue::Job {
        id: "legacy-1".into(),
        queue: "jobs".into(),
        payload: "legacy".into(),
        attempts: 1,
        enqueued_at: chrono::Utc::now().to_rfc3339(),
        last_error: Some("HTTP 503".into()),
        tenant: None,
        dead_at: None,
        not_before_ms: Some(in_an_hour),
    };
    services
        .kv
        .list_push(&queue::queue_key("jobs"), &[legacy.entry()])
        .await
        .unwrap();
    let server = match backend {
        Backend::Embedded => dep.start_with_services(LONG_RETRY, services.clone()).await,
        Backend::Real => dep.start(LONG_RETRY, "a").await,
    };
    let kv = &server.services.kv;
    for i in 0..50 {
        queue::enqueue(kv, "jobs", None, &format!("fail-{i}"))
            .await
            .unwrap();
    }
    queue::enqueue(kv, "jobs", None, "after").await.unwrap();
    let retrying = queue::retrying_key("jobs");
    support::wait_until(
        "every job failed once and the one behind them ran",
        || async {
            kv.sorted_len(&retrying).await.unwrap() == 51
                && kv.get("probe:job:after").await.unwrap().is_some()
        },
    )
    .await;
    assert_eq!(
        kv.list_len(&queue::queue_key("jobs")).await.unwrap(),
        0,
        "no retry waits in the queue"
    );
    let failed_at = chrono::Utc::now().timestamp_millis();
    for (raw, due) in kv.sorted_range(&retrying, 0, -1).await.unwrap() {
        let job: queue::Job = serde_json::from_slice(&raw).unwrap();
        assert_eq!(job.not_before_ms, None, "the set's score says when");
        assert_eq!(job.attempts, 1, "{job:?}");
        if job.id == "legacy-1" {
            assert_eq!(due, in_an_hour);
        } else {
            assert!(job.payload.starts_with("fail-"), "{job:?}");
            assert!(job.last_error.unwrap().contains("failed on purpose"));
            let wait = due - failed_at;
            assert!((3_500_000..=3_600_000).contains(&wait), "due in {wait} ms");
        }
    }
    assert!(
        kv.get("probe:job:legacy").await.unwrap().is_none(),
        "not run before it is due"
    );
    let token = auth::create_token(server.master(), Role::Admin, "oncall")
        .await
        .unwrap();
    let (status, metrics) = server.get("/metrics", Some(&token)).await;
    assert_eq!(status, 200, "{metrics}");
    for line in [
        r#"neo_ops_queue_retrying{queue="jobs"} 51"#,
        r#"neo_ops_queue_depth{queue="jobs"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    server.stop().await.unwrap();
}

on_both_backends!(long_retries, retries_wait_outside_the_queue);

/// The retrying set's moves on Redis (scripts) and in process agree: a
/// deferred entry leaves its list once, retries come back soonest first
/// onto the end consumers take from, a batch at a time, and the answer says
/// when the next is due; one set aside by a clock running ahead is brought
/// forward to the longest delay from now.
async fn due_retries_come_back_soonest_first(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let services = neo_ops::services::Services::connect(dep.settings("setup"))
        .await
        .unwrap();
    let kv = &services.kv;
    let (list, set, queue) = ("t:processing", "t:retrying", "t:queue");
    for (entry, due) in [(&b"c"[..], 30), (b"a", 10), (b"b", 20), (b"d", 40)] {
        kv.list_push(list, &[entry.to_vec()]).await.unwrap();
        assert!(kv.list_defer(list, entry, (set, due), entry).await.unwrap());
        assert!(
            !kv.list_defer(list, entry, (set, due), entry).await.unwrap(),
            "moved once"
        );
    }
    assert_eq!(kv.list_len(list).await.unwrap(), 0);
    assert_eq!(kv.sorted_len(set).await.unwrap(), 4);
    kv.list_push(queue, &[b"older".to_vec()]).await.unwrap();
    let released = kv.release_due(set, queue, (30, 1000), 2).await.unwrap();
    assert_eq!((released.moved, released.next_due_ms), (2, Some(30)));
    let released = kv.release_due(set, queue, (30, 1000), 2).await.unwrap();
    assert_eq!((released.moved, released.next_due_ms), (1, Some(40)));
    let mut taken = Vec::new();
    while let Some(raw) = kv.list_move_oldest(queue, "t:taken").await.unwrap() {
        taken.push(String::from_utf8(raw).unwrap());
    }
    assert_eq!(taken, ["older", "a", "b", "c"]);
    assert_eq!(
        kv.sorted_range(set, 0, -1).await.unwrap(),
        vec![(b"d".to_vec(), 40)]
    );
    // One set aside by a clock an hour ahead waits no longer than the
    // longest delay (here 100) from now.
    kv.list_push(list, &[b"ahead".to_vec()]).await.unwrap();
    assert!(
        kv.list_defer(list, b"ahead", (set, 3_600_000), b"ahead")
            .await
            .unwrap()
    );
    let released = kv.release_due(set, queue, (40, 140), 10).await.unwrap();
    assert_eq!((released.moved, released.next_due_ms), (1, Some(140)));
    assert_eq!(
        kv.sorted_range(set, 0, -1).await.unwrap(),
        vec![(b"ahead".to_vec(), 140)]
    );
    let released = kv.release_due(set, queue, (140, 240), 10).await.unwrap();
    assert_eq!((released.moved, released.next_due_ms), (1, None));
    assert_eq!(kv.sorted_len(set).await.unwrap(), 0);
    // A list is not a sorted set: refused, and nothing moves.
    kv.list_push(list, &[b"e".to_vec()]).await.unwrap();
    assert!(matches!(
        kv.list_defer(list, b"e", ("t:taken", 1), b"e").await,
        Err(neo_ops::backends::kv::KvError::WrongType(_))
    ));
    assert_eq!(kv.list_len(list).await.unwrap(), 1);
    for key in [list, queue, "t:taken"] {
        kv.delete(key).await.unwrap();
    }
}

on_both_backends!(retrying_set, due_retries_come_back_soonest_first);

const GUARDED: &str = r#"
[plugins.status-page]
component = "status_page.wasm"
routes = [
  { method = "GET", path = "/admin/support/console/status", role = "super_admin" },
  { method = "GET", path = "/api/admin/status", role = "admin" },
  { method = "GET", path = "/status.json" },
]
grants = { db = ["master"] }
"#;

use support::FORBIDDEN;

async fn roles_are_enforced_with_the_spec_body(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(GUARDED, "a").await;
    let master = server.master().clone();
    let root = auth::create_token(&master, Role::SuperAdmin, "oncall")
        .await
        .unwrap();
    let admin = auth::create_token(&master, Role::Admin, "support")
        .await
        .unwrap();
    let revoked = auth::create_token(&master, Role::SuperAdmin, "former")
        .await
        .unwrap();
    let revoked_id = &revoked[4..12];
    assert!(auth::revoke_token(&master, revoked_id).await.unwrap());
    let forged = format!("{}{}", &root[..root.len() - 4], "0000");

    let super_route = "/admin/support/console/status";
    for token in [
        None,
        Some("garbage"),
        Some(admin.as_str()),
        Some(revoked.as_str()),
        Some(forged.as_str()),
    ] {
        let (code, body) = server.get(super_route, token).await;
        assert_eq!((code, body.as_str()), (403, FORBIDDEN), "token {token:?}");
    }
    // A non-bearer scheme is no token at all.
    let resp = server
        .http
        .get(server.url(super_route))
        .header("authorization", format!("Basic {root}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(resp.text().await.unwrap(), FORBIDDEN);

    assert_eq!(server.get(super_route, Some(&root)).await.0, 200);
    // super_admin includes admin.
    assert_eq!(server.get("/api/admin/status", Some(&admin)).await.0, 200);
    assert_eq!(server.get("/api/admin/status", Some(&root)).await.0, 200);
    assert_eq!(
        server.get("/api/admin/status", None).await,
        (403, FORBIDDEN.to_string())
    );
    // Public routes need nothing.
    assert_eq!(server.get("/status.json", None).await.0, 200);

    // Only the hash is stored.
    let stored = master
        .query(
            "SELECT token_hash FROM api_tokens WHERE name = 'oncall'",
            &[],
        )
        .await
        .unwrap();
    let Value::Text(hash) = &stored.rows[0][0] else {
        panic!()
    };
    assert_eq!(hash.len(), 64);
    assert!(!hash.contains(&root[13..]));
    server.stop().await.unwrap();
}

on_both_backends!(auth_roles, roles_are_enforced_with_the_spec_body);

/// The scheduler answers "what fires when" for a given clock, in each zone.
#[test]
fn due_slots_follow_the_time_zone() {
    use chrono::{TimeZone, Utc};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    std::fs::write(
        &path,
        r#"
[plugins.digest]
component = "test_probe.wasm"
schedules = [{ cron = "0 20 * * *", tz = "Asia/Kolkata" }]
[plugins.purge]
component = "test_probe.wasm"
schedules = [{ cron = "0 3 * * *", tz = "UTC" }]
"#,
    )
    .unwrap();
    let manifest = neo_ops::manifest::load(&path).unwrap();
    let from = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
    let due = neo_ops::triggers::schedule::due_between(&manifest, from, to);
    let got: Vec<(String, String)> = due
        .iter()
        .map(|d| (d.plugin.clone(), d.at.to_rfc3339()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("purge".to_string(), "2026-11-25T03:00:00+00:00".to_string()),
            (
                "digest".to_string(),
                "2026-11-25T14:30:00+00:00".to_string()
            ),
        ]
    );
}

/// The shipped manifest's schedules fire the right plugin at the right
/// instant in their zones, judged with a chosen clock instead of waiting.
#[test]
fn shipped_schedules_fire_at_the_spec_times() {
    use chrono::{TimeZone, Utc};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = neo_ops::manifest::load(&root.join("plugins.toml")).unwrap();
    // The spec's jobs; the webhook sweep (every 15 minutes) is counted below.
    let sweeps = |from, to| {
        neo_ops::triggers::schedule::due_between(&manifest, from, to)
            .into_iter()
            .filter(|d| d.plugin == "webhook-dispatch")
            .count()
    };
    let slots = |from, to| -> Vec<(String, String)> {
        neo_ops::triggers::schedule::due_between(&manifest, from, to)
            .into_iter()
            .filter(|d| d.plugin != "webhook-dispatch")
            .map(|d| (d.plugin, d.at.to_rfc3339()))
            .collect()
    };
    // 1 December 2026 (UTC): the monthly test alert, the 20:00 IST digest
    // and the 03:00 IST purge (of 2 December there).
    let day = slots(
        Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 1, 23, 0, 0).unwrap(),
    );
    assert_eq!(
        day,
        vec![
            (
                "emit-test-alert".to_string(),
                "2026-12-01T03:30:00+00:00".to_string()
            ),
            (
                "owner-digest".to_string(),
                "2026-12-01T14:30:00+00:00".to_string()
            ),
            ("purge".to_string(), "2026-12-01T21:30:00+00:00".to_string()),
        ]
    );
    // A mid-month day has no test alert; the digest stays at 14:30 UTC.
    let day = slots(
        Utc.with_ymd_and_hms(2026, 12, 14, 23, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 15, 23, 0, 0).unwrap(),
    );
    assert_eq!(day.len(), 2, "{day:?}");
    assert!(day.iter().all(|(p, _)| p != "emit-test-alert"));
    assert_eq!(
        sweeps(
            Utc.with_ymd_and_hms(2026, 12, 15, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 16, 0, 0, 0).unwrap(),
        ),
        96
    );
    // Each schedule passes its args to the plugin.
    let args = |name: &str| {
        manifest
            .plugins
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .schedules[0]
            .args
            .clone()
    };
    assert_eq!(args("purge"), vec!["--all-tenants"]);
    assert_eq!(args("owner-digest"), vec!["--all-tenants"]);
    assert_eq!(
        args("emit-test-alert"),
        vec!["--message", "Monthly test alert"]
    );
}

const TICKER_AND_WORKER: &str = r#"
[plugins.ticker]
component = "test_probe.wasm"
schedules = [{ cron = "* * * * * *" }]
queue = { name = "jobs", max_attempts = 1 }
grants = { kv = ["probe:"] }
"#;

/// The ticker on three plugin slots (one for background work), with a
/// queue job of `ms` holding that one.
async fn ticker_behind_a_long_job(dep: &Deployment, ms: u64) -> support::Server {
    let mut settings = dep.settings("a");
    settings.max_instances = 3;
    settings.admission = neo_ops::runtime::admission::AdmissionPolicy {
        wait: Duration::from_millis(100),
        ..Default::default()
    };
    let services = neo_ops::services::Services::connect(settings)
        .await
        .unwrap();
    let server = dep.start_with_services(TICKER_AND_WORKER, services).await;
    queue::enqueue(
        &server.services.kv,
        "jobs",
        None,
        &format!("sleep:{ms}-no-kv"),
    )
    .await
    .unwrap();
    server
}

/// A slot that finds the background share taken (a long queue job holds
/// it) waits for a plugin slot instead of being used up as an error: every
/// run ends ok, the ones due during the job included.
async fn a_busy_slot_waits_rather_than_failing(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = ticker_behind_a_long_job(&dep, 2500).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    server.stop().await.unwrap();
    let rows = ticker_runs(&dep, "slot, status, finished_at, started_at")
        .await
        .rows;
    // A slot that came due during the job ran once the job had freed the
    // slot, over a second late; its history says when it started, not
    // when it began to wait, so its duration is the ticker's.
    let waited = rows.iter().any(|r| match (&r[0], &r[3]) {
        (Value::Text(slot), Value::Timestamp(started)) => {
            let due = chrono::DateTime::parse_from_rfc3339(slot).unwrap();
            *started - due.timestamp_micros() > 1_000_000
        }
        _ => false,
    });
    assert!(waited, "{rows:?}");
    for r in &rows {
        assert!(matches!(&r[1], Value::Text(s) if s == "ok"), "{r:?}");
        let (Value::Timestamp(done), Value::Timestamp(started)) = (&r[2], &r[3]) else {
            panic!("{r:?}");
        };
        assert!((0..500_000).contains(&(done - started)), "{r:?}");
    }
}

on_both_backends!(busy_slots, a_busy_slot_waits_rather_than_failing);

/// Shutdown while a slot waits for a plugin slot: the slot gives up at
/// once rather than start its run during the drain when the long job
/// ends. Catch-up is off here, so nothing would run it later: its row stays
/// and is marked interrupted (with catch-up on, the claim is given back:
/// `a_slot_waiting_at_shutdown_runs_at_the_next_start`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_waiting_at_shutdown_does_not_start() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = ticker_behind_a_long_job(&dep, 3000).await;
    // The job holds the background share; the next slots wait for it.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let stop_asked = chrono::Utc::now().timestamp_micros();
    server.stop().await.unwrap();
    let rows = ticker_runs(&dep, "slot, status, finished_at").await.rows;
    assert!(
        rows.iter()
            .any(|r| r[1] == Value::Text("interrupted".into())),
        "{rows:?}"
    );
    for r in &rows {
        if let (Value::Text(status), Value::Timestamp(done)) = (&r[1], &r[2])
            && status == "ok"
        {
            assert!(
                *done < stop_asked + 500_000,
                "a run started during the drain: {r:?}"
            );
        }
    }
}

/// A slot whose run was cut off (its process stopped or died mid-run, the
/// run marked interrupted) runs again at the next start, within the
/// catch-up; a slot whose run finished, even in error, does not. Before,
/// the interrupted claim kept the slot, and that night's run never
/// happened.
async fn interrupted_slot_runs_again(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let (slot, ticker) = a_slot_ten_minutes_ago();
    let manifest = format!(
        "{ticker}\n{}",
        ticker.replace("plugins.ticker", "plugins.failed")
    );
    let slot_text = slot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut settings = dep.settings("a");
    settings.schedule_catch_up = Duration::from_secs(3600);
    let services = neo_ops::services::Services::connect(settings)
        .await
        .unwrap();
    let started = slot + chrono::Duration::seconds(1);
    for (plugin, status) in [("ticker", "interrupted"), ("failed", "error")] {
        services
            .db
            .master()
            .execute(
                "INSERT INTO runs (plugin, trigger, slot, replica, status, started_at, finished_at) \
                 VALUES ($1, 'schedule:0', $2, 'gone-replica', $3, $4, $4)",
                &[
                    Value::Text(plugin.into()),
                    Value::Text(slot_text.clone()),
                    Value::Text(status.into()),
                    Value::Timestamp(started.timestamp_micros()),
                ],
            )
            .await
            .unwrap();
    }
    let server = dep.start_with_services(&manifest, services.clone()).await;
    let runs = || async {
        services
            .db
            .master()
            .query(
                "SELECT plugin, slot, replica, status FROM runs ORDER BY plugin",
                &[],
            )
            .await
            .unwrap()
            .rows
    };
    let me = Value::Text(services.settings.replica.clone());
    let want = vec![
        vec![
            Value::Text("failed".into()),
            Value::Text(slot_text.clone()),
            Value::Text("gone-replica".into()),
            Value::Text("error".into()),
        ],
        vec![
            Value::Text("ticker".into()),
            Value::Text(slot_text.clone()),
            me,
            Value::Text("ok".into()),
        ],
    ];
    support::wait_until("the interrupted slot ran again", || async {
        runs().await == want
    })
    .await;
    // Both schedules' catch-up has fired by now (the ticker's is done):
    // the slot that ended in error stays as it ended.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs().await, want);
    server.stop().await.unwrap();
}

on_both_backends!(interrupted_slots, interrupted_slot_runs_again);

/// A run whose claim another replica took over meanwhile (marked
/// interrupted while this replica looked departed, then claimed again) is
/// not recorded over the new claim, nor given back under it: the row stays
/// the other's until that one finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_taken_over_is_not_recorded_over_the_new_claim() {
    let dep = Deployment::new(Backend::Embedded).await;
    let (_, manifest) = a_slot_ten_minutes_ago();
    let manifest = manifest.replace("\" }]", "\", args = [\"sleep:3000\"] }]");
    assert!(manifest.contains("sleep:3000"), "{manifest}");
    let mut settings = dep.settings("a");
    settings.schedule_catch_up = Duration::from_secs(3600);
    let services = neo_ops::services::Services::connect(settings)
        .await
        .unwrap();
    let server = dep.start_with_services(&manifest, services.clone()).await;
    support::wait_until("the slot runs", || async {
        ticker_runs(&dep, "status").await.rows == vec![vec![Value::Text("running".into())]]
    })
    .await;
    services
        .db
        .master()
        .execute(
            "UPDATE runs SET replica = 'other-replica' WHERE plugin = 'ticker'",
            &[],
        )
        .await
        .unwrap();
    // The 3 s run ends meanwhile; the process then stops.
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.stop().await.unwrap();
    assert_eq!(
        ticker_runs(&dep, "replica, status").await.rows,
        vec![vec![
            Value::Text("other-replica".into()),
            Value::Text("running".into())
        ]]
    );
}
