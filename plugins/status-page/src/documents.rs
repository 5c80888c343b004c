//! The JSON documents the status routes serve, as types: serialised straight
//! into the response body, with no map of values built per request (aggregators
//! poll these routes, so they are the plugin's hot path). Fields are declared
//! in the order they are written.

use neo_ops_sdk::{config, time};
use serde::Serialize;

use crate::incidents::{Board, Impact, Incident};

/// The spec's `/status.json`, then what Statuspage readers look for.
#[derive(Serialize)]
pub struct Seed<'a> {
    state: &'static str,
    incidents: Vec<SeedIncident<'a>>,
    page: Page,
    status: Status,
}

/// Statuspage's `/api/v2/status.json`.
#[derive(Serialize)]
pub struct StatusDocument {
    page: Page,
    status: Status,
}

/// Statuspage's `/api/v2/summary.json`.
#[derive(Serialize)]
pub struct Summary<'a> {
    page: Page,
    components: Vec<Component>,
    incidents: Vec<StatuspageIncident<'a>>,
    /// Always empty: neo-ops has no scheduled maintenance.
    scheduled_maintenances: [(); 0],
    status: Status,
}

/// Statuspage's `/api/v2/incidents/unresolved.json`.
#[derive(Serialize)]
pub struct Unresolved<'a> {
    page: Page,
    incidents: Vec<StatuspageIncident<'a>>,
}

/// `/status/health`'s body.
#[derive(Serialize)]
pub struct Health {
    pub state: &'static str,
    pub incidents: usize,
}

/// Statuspage's overall indicator: the worst impact among active incidents.
#[derive(Serialize)]
pub struct Status {
    indicator: &'static str,
    pub description: &'static str,
}

#[derive(Serialize)]
struct Page {
    id: &'static str,
    name: String,
    url: String,
    time_zone: &'static str,
    updated_at: Option<String>,
}

/// One of the platform's services (config `components`).
#[derive(Serialize)]
struct Component {
    id: String,
    name: String,
    status: &'static str,
    position: usize,
}

/// An incident as the spec's `/status.json` lists it.
#[derive(Serialize)]
struct SeedIncident<'a> {
    title: &'a str,
    details: &'a str,
    started_at: String,
}

/// An incident as Statuspage's documents list it.
#[derive(Serialize)]
struct StatuspageIncident<'a> {
    id: String,
    name: &'a str,
    status: &'a str,
    impact: &'static str,
    created_at: String,
    started_at: String,
    updated_at: String,
    resolved_at: Option<String>,
    incident_updates: Vec<IncidentUpdate<'a>>,
    /// Always empty: incidents are not tied to components.
    components: [(); 0],
}

#[derive(Serialize)]
struct IncidentUpdate<'a> {
    id: String,
    status: &'a str,
    body: &'a str,
    created_at: String,
    updated_at: String,
    display_at: String,
}

/// The worst impact among active incidents, if any.
fn worst(active: &[Incident]) -> Option<Impact> {
    active.iter().map(|i| i.impact).max()
}

impl Status {
    pub fn of(active: &[Incident]) -> Self {
        let (indicator, description) = match worst(active) {
            None => ("none", "All Systems Operational"),
            Some(Impact::Minor) => ("minor", "Minor Service Outage"),
            Some(Impact::Major) => ("major", "Partial System Outage"),
            Some(Impact::Critical) => ("critical", "Major Service Outage"),
        };
        Status {
            indicator,
            description,
        }
    }
}

impl Page {
    fn of(updated_at: Option<i64>) -> Self {
        Page {
            id: "neo",
            name: config::text("page_name").unwrap_or_else(|| "neo".into()),
            url: config::text("page_url").unwrap_or_default(),
            time_zone: "Etc/UTC",
            updated_at: updated_at.map(time::rfc3339),
        }
    }
}

/// The platform's services (config `components`), each as bad as the worst
/// active incident.
fn components(active: &[Incident]) -> Vec<Component> {
    let status = match worst(active) {
        None => "operational",
        Some(Impact::Minor) => "degraded_performance",
        Some(Impact::Major) => "partial_outage",
        Some(Impact::Critical) => "major_outage",
    };
    config::list(
        "components",
        &["POS", "Online ordering", "Kitchen display", "Webhooks"],
    )
    .into_iter()
    .enumerate()
    .map(|(i, name)| Component {
        id: format!("c{}", i + 1),
        name,
        status,
        position: i + 1,
    })
    .collect()
}

impl<'a> SeedIncident<'a> {
    fn of(i: &'a Incident) -> Self {
        SeedIncident {
            title: &i.title,
            details: &i.details,
            started_at: time::rfc3339(i.started_at),
        }
    }
}

impl<'a> StatuspageIncident<'a> {
    fn of(i: &'a Incident) -> Self {
        let status = match (i.resolved_at, i.updates.first()) {
            (Some(_), _) => "resolved",
            (None, Some(u)) => u.status.as_str(),
            (None, None) => "investigating",
        };
        // Statuspage repeats one instant under several names: format it once.
        let started_at = time::rfc3339(i.started_at);
        let update = |id: String, status, body, at: String| IncidentUpdate {
            id,
            status,
            body,
            created_at: at.clone(),
            updated_at: at.clone(),
            display_at: at,
        };
        // The details the incident was started with are its first entry:
        // aggregators show the timeline's bodies, never a `details` field,
        // so without it an incident nobody has updated yet says nothing.
        let opening = (!i.details.trim().is_empty()).then(|| {
            let id = format!("{}-opened", i.id);
            update(id, "investigating", i.details.as_str(), started_at.clone())
        });
        StatuspageIncident {
            id: i.id.to_string(),
            name: &i.title,
            status,
            impact: i.impact.as_str(),
            created_at: started_at.clone(),
            started_at,
            updated_at: time::rfc3339(i.updated_at),
            resolved_at: i.resolved_at.map(time::rfc3339),
            incident_updates: i
                .updates
                .iter()
                .map(|u| update(u.id.to_string(), &u.status, &u.message, time::rfc3339(u.at)))
                .chain(opening)
                .collect(),
            components: [],
        }
    }
}

pub fn seed(board: &Board) -> Seed<'_> {
    let active = &board.active;
    Seed {
        state: if active.is_empty() {
            "operational"
        } else {
            "degraded"
        },
        incidents: active.iter().map(SeedIncident::of).collect(),
        page: Page::of(board.updated_at),
        status: Status::of(active),
    }
}

pub fn status(board: &Board) -> StatusDocument {
    StatusDocument {
        page: Page::of(board.updated_at),
        status: Status::of(&board.active),
    }
}

pub fn summary(board: &Board) -> Summary<'_> {
    let active = &board.active;
    Summary {
        page: Page::of(board.updated_at),
        components: components(active),
        incidents: active.iter().map(StatuspageIncident::of).collect(),
        scheduled_maintenances: [],
        status: Status::of(active),
    }
}

pub fn unresolved(board: &Board) -> Unresolved<'_> {
    Unresolved {
        page: Page::of(board.updated_at),
        incidents: board.active.iter().map(StatuspageIncident::of).collect(),
    }
}
