//! Incidents in the master database: load, start, update, resolve. Each
//! change goes in with its audit record (`incident.start`, `.update`,
//! `.resolve`) in one host call: who told the public what is on record.

use neo_ops_sdk::db::{self, Statement, Value};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{ErrorCode, Failure, Output, audit, reply, time};
use serde::{Deserialize, Serialize};

/// Statuspage's impact levels, ordered from least to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    Minor,
    Major,
    Critical,
}

impl Impact {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "minor" => Some(Impact::Minor),
            "major" => Some(Impact::Major),
            "critical" => Some(Impact::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Impact::Minor => "minor",
            Impact::Major => "major",
            Impact::Critical => "critical",
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct Update {
    pub id: i64,
    pub status: String,
    pub message: String,
    pub at: i64,
}

#[derive(Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub title: String,
    pub details: String,
    pub impact: Impact,
    pub started_at: i64,
    pub resolved_at: Option<i64>,
    pub updated_at: i64,
    /// Newest first.
    pub updates: Vec<Update>,
}

/// Incidents with their updates, in one query (one row per update, or one
/// for an incident without any), newest update first.
const WITH_UPDATES: &str = "SELECT i.id, i.title, i.details, i.impact, i.started_at, i.resolved_at, \
     u.id AS update_id, u.status AS update_status, u.message, u.created_at AS update_at \
     FROM incidents i LEFT JOIN incident_updates u ON u.incident_id = i.id";

fn load(filter: &str, order: &str, params: &[Value]) -> Result<Vec<Incident>, Failure> {
    let sql =
        format!("{WITH_UPDATES} WHERE {filter} ORDER BY {order}, u.created_at DESC, u.id DESC");
    let rows = db::query("master", &sql, params)?;
    let mut list: Vec<Incident> = Vec::new();
    for r in rows.iter() {
        let id = r.int("id").unwrap_or(0);
        if list.last().is_none_or(|i| i.id != id) {
            let started_at = r.get("started_at").as_timestamp().unwrap_or(0);
            let resolved_at = r.get("resolved_at").as_timestamp();
            list.push(Incident {
                id,
                title: r.text("title").unwrap_or_default().to_string(),
                details: r.text("details").unwrap_or_default().to_string(),
                impact: r
                    .text("impact")
                    .and_then(Impact::parse)
                    .unwrap_or(Impact::Minor),
                started_at,
                resolved_at,
                updated_at: resolved_at.unwrap_or(started_at),
                updates: Vec::new(),
            });
        }
        let (Some(update_id), Some(incident)) = (r.int("update_id"), list.last_mut()) else {
            continue;
        };
        let at = r.get("update_at").as_timestamp().unwrap_or(0);
        incident.updated_at = incident.updated_at.max(at);
        incident.updates.push(Update {
            id: update_id,
            status: r
                .text("update_status")
                .unwrap_or("investigating")
                .to_string(),
            message: r.text("message").unwrap_or_default().to_string(),
            at,
        });
    }
    Ok(list)
}

/// What the status documents show: the active incidents, and when the page
/// last changed (an active incident's latest change, else the time the last
/// one was resolved; none before any incident).
#[derive(Serialize, Deserialize)]
pub struct Board {
    pub active: Vec<Incident>,
    pub updated_at: Option<i64>,
}

/// The board, in one query: the incident resolved last comes with the
/// active ones, for the page's `updated_at` when none is active.
pub fn board() -> Result<Board, Failure> {
    let loaded = load(
        "i.resolved_at IS NULL OR i.id = (SELECT id FROM incidents WHERE resolved_at IS NOT NULL \
         ORDER BY resolved_at DESC, id DESC LIMIT 1)",
        "i.started_at, i.id",
        &[],
    )?;
    let updated_at = loaded.iter().map(|i| i.updated_at).max();
    Ok(Board {
        active: loaded
            .into_iter()
            .filter(|i| i.resolved_at.is_none())
            .collect(),
        updated_at,
    })
}

/// Incidents resolved within the last `days` days, newest first.
pub fn recently_resolved(days: i64) -> Result<Vec<Incident>, Failure> {
    let since = time::now_micros() - days * 86_400 * 1_000_000;
    load(
        "i.resolved_at IS NOT NULL AND i.resolved_at >= $1",
        "i.resolved_at DESC, i.id",
        &[Value::Timestamp(since)],
    )
}

/// Runs `statements` on the master with the audit record of `action` on
/// incident `title`; returns the rows each changed, or `None` when the
/// change committed and only its record failed (the host logged it): the
/// change is live, so it is reported done, not failed (a retried `update`
/// would post its entry twice).
fn audited(
    statements: Vec<Statement>,
    action: &str,
    title: &str,
    details: Json,
) -> Result<Option<Vec<u64>>, neo_ops_sdk::Error> {
    let entry = audit::entry(action, &format!("incident:{title}"), None, details);
    match audit::record_transaction("master", &statements, &entry) {
        Ok((_, rows)) => Ok(Some(rows)),
        Err(e) if audit::committed(&e) => {
            neo_ops_sdk::warn(&format!("{action} on \"{title}\" is made: {}", e.message));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub fn start(title: &str, details: &str, impact: Impact) -> Result<Output, Failure> {
    if title.trim().is_empty() {
        return Err(reply::fail(400, "incident title must not be empty"));
    }
    let insert = Statement {
        sql: "INSERT INTO incidents (title, details, started_at, impact) VALUES ($1, $2, $3, $4)"
            .into(),
        params: vec![
            Value::from(title),
            Value::from(details),
            Value::Timestamp(time::now_micros()),
            Value::from(impact.as_str()),
        ],
    };
    match audited(
        vec![insert],
        "incident.start",
        title,
        json!({"impact": impact.as_str()}),
    ) {
        Ok(_) => Ok(reply::text(200, format!("started incident \"{title}\"\n"))),
        Err(e) if e.code == ErrorCode::Conflict => Err(reply::fail(
            409,
            format!("incident \"{title}\" is already active"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// 404 for a title with nothing active, naming the titles that are, so a
/// typo at 3 AM needs no look at the page to put right.
fn not_active(title: &str) -> Failure {
    let titles = db::query(
        "master",
        "SELECT title FROM incidents WHERE resolved_at IS NULL ORDER BY started_at, id",
        &[],
    )
    .map(|rows| {
        rows.iter()
            .filter_map(|r| r.text("title").map(|t| format!("\"{t}\"")))
            .collect::<Vec<_>>()
    })
    .unwrap_or_default();
    let active = if titles.is_empty() {
        "no incident is active".to_string()
    } else {
        format!("active: {}", titles.join(", "))
    };
    reply::fail(
        404,
        format!("no active incident titled \"{title}\" ({active})"),
    )
}

/// The timeline entry a resolution adds (Statuspage's own words).
const RESOLVED: &str = "This incident has been resolved.";

/// Adds `message` to the active incident `title`'s timeline, and sets its
/// impact to `impact` if given, in one transaction with the record.
pub fn update(title: &str, message: &str, impact: Option<Impact>) -> Result<Output, Failure> {
    if message.trim().is_empty() {
        return Err(reply::fail(400, "an update needs a message"));
    }
    let found = db::query(
        "master",
        "SELECT id FROM incidents WHERE title = $1 AND resolved_at IS NULL",
        &[Value::from(title)],
    )?;
    let Some(id) = found.iter().next().and_then(|r| r.int("id")) else {
        return Err(not_active(title));
    };
    let insert = Statement {
        sql: "INSERT INTO incident_updates (incident_id, status, message, created_at) \
              VALUES ($1, 'identified', $2, $3)"
            .into(),
        params: vec![
            Value::Int(id),
            Value::from(message),
            Value::Timestamp(time::now_micros()),
        ],
    };
    let mut statements = vec![insert];
    if let Some(impact) = impact {
        statements.push(Statement {
            // Not a resolve that landed since the look-up.
            sql: "UPDATE incidents SET impact = $1 WHERE id = $2 AND resolved_at IS NULL".into(),
            params: vec![Value::from(impact.as_str()), Value::Int(id)],
        });
    }
    let details = match impact {
        Some(impact) => json!({"incident": id, "impact": impact.as_str()}),
        None => json!({"incident": id}),
    };
    audited(statements, "incident.update", title, details)?;
    let now = impact.map_or(String::new(), |i| format!(", now {}", i.as_str()));
    Ok(reply::text(
        200,
        format!("updated incident \"{title}\"{now}\n"),
    ))
}

/// Resolves the active incident `title`, with a `resolved` entry on its
/// timeline (what Statuspage clients show last), in one transaction.
pub fn resolve(title: &str) -> Result<Output, Failure> {
    // Looked up first, so a title with nothing active leaves no record.
    let active = db::query(
        "master",
        "SELECT id FROM incidents WHERE title = $1 AND resolved_at IS NULL",
        &[Value::from(title)],
    )?;
    if active.rows.is_empty() {
        return Err(not_active(title));
    }
    let params = vec![Value::Timestamp(time::now_micros()), Value::from(title)];
    let done = audited(
        vec![
            Statement {
                sql:
                    "UPDATE incidents SET resolved_at = $1 WHERE title = $2 AND resolved_at IS NULL"
                        .into(),
                params: params.clone(),
            },
            Statement {
                sql: "INSERT INTO incident_updates (incident_id, status, message, created_at) \
                      SELECT id, 'resolved', $3, $1 FROM incidents \
                      WHERE title = $2 AND resolved_at = $1"
                    .into(),
                params: [params.as_slice(), &[Value::from(RESOLVED)]].concat(),
            },
        ],
        "incident.resolve",
        title,
        json!({}),
    )?;
    // Nothing resolved (another resolve got there first), unless unknown.
    if done.is_some_and(|rows| rows.first() == Some(&0)) {
        return Err(not_active(title));
    }
    Ok(reply::text(200, format!("resolved incident \"{title}\"\n")))
}
