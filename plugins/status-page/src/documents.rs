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

/// The page's id in every document (Statuspage's `page.id`, `page_id`).
const PAGE_ID: &str = "neo";

/// `page.updated_at` of a page no incident has ever changed: clients
/// parse it as a time (a typed client refuses a null, and Python's
/// `fromisoformat` throws), and a value that never moves keeps the
/// documents' entity tags stable.
const NEVER_UPDATED: &str = "1970-01-01T00:00:00.000Z";

#[derive(Serialize)]
struct Page {
    id: &'static str,
    name: String,
    url: String,
    time_zone: &'static str,
    updated_at: String,
}

/// One of the platform's services (config `components`), with every key a
/// Statuspage component has: clients index them directly (`c["group"]`,
/// `c.group_id === null`).
#[derive(Serialize)]
struct Component {
    id: String,
    name: String,
    status: &'static str,
    position: usize,
    description: Option<()>,
    group: bool,
    group_id: Option<()>,
    only_show_if_degraded: bool,
    showcase: bool,
    start_date: Option<()>,
    page_id: &'static str,
    created_at: String,
    updated_at: String,
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
    /// When it was first set to monitoring, if it was.
    monitoring_at: Option<String>,
    page_id: &'static str,
    shortlink: String,
    incident_updates: Vec<IncidentUpdate<'a>>,
    /// Always empty: incidents are not tied to components.
    components: [(); 0],
}

#[derive(Serialize)]
struct IncidentUpdate<'a> {
    id: String,
    incident_id: String,
    status: &'a str,
    body: &'a str,
    created_at: String,
    updated_at: String,
    display_at: String,
    /// Always empty: incidents are not tied to components.
    affected_components: [(); 0],
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
            id: PAGE_ID,
            name: config::text("page_name").unwrap_or_else(|| "neo".into()),
            url: config::text("page_url").unwrap_or_default(),
            time_zone: "Etc/UTC",
            updated_at: updated_at.map_or_else(|| NEVER_UPDATED.into(), time::rfc3339_millis),
        }
    }
}

/// The platform's services (config `components`), each as bad as the worst
/// active incident.
fn components(active: &[Incident], page: &Page) -> Vec<Component> {
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
        description: None,
        group: false,
        group_id: None,
        only_show_if_degraded: false,
        showcase: true,
        start_date: None,
        page_id: PAGE_ID,
        created_at: page.updated_at.clone(),
        updated_at: page.updated_at.clone(),
    })
    .collect()
}

impl<'a> SeedIncident<'a> {
    fn of(i: &'a Incident) -> Self {
        SeedIncident {
            title: &i.title,
            details: &i.details,
            started_at: time::rfc3339_millis(i.started_at),
        }
    }
}

impl<'a> StatuspageIncident<'a> {
    fn of(i: &'a Incident, page: &Page) -> Self {
        let status = match (i.resolved_at, i.updates.first()) {
            (Some(_), _) => "resolved",
            (None, Some(u)) => u.status.as_str(),
            (None, None) => "investigating",
        };
        // Statuspage repeats one instant under several names: format it once.
        let started_at = time::rfc3339_millis(i.started_at);
        let incident_id = i.id.to_string();
        let update = |id: String, status, body, at: String| IncidentUpdate {
            id,
            incident_id: incident_id.clone(),
            status,
            body,
            created_at: at.clone(),
            updated_at: at.clone(),
            display_at: at,
            affected_components: [],
        };
        // The details the incident was started with are its first entry:
        // aggregators show the timeline's bodies, never a `details` field,
        // so without it an incident nobody has updated yet says nothing.
        let opening = (!i.details.trim().is_empty()).then(|| {
            let id = format!("{}-opened", i.id);
            update(id, "investigating", i.details.as_str(), started_at.clone())
        });
        // Updates are newest first: the oldest set to monitoring is last.
        let monitoring_at = i.updates.iter().rev().find(|u| u.status == "monitoring");
        StatuspageIncident {
            id: incident_id.clone(),
            name: &i.title,
            status,
            impact: i.impact.as_str(),
            created_at: started_at.clone(),
            started_at,
            updated_at: time::rfc3339_millis(i.updated_at),
            resolved_at: i.resolved_at.map(time::rfc3339_millis),
            monitoring_at: monitoring_at.map(|u| time::rfc3339_millis(u.at)),
            page_id: PAGE_ID,
            shortlink: page.url.clone(),
            incident_updates: i
                .updates
                .iter()
                .map(|u| {
                    update(
                        u.id.to_string(),
                        &u.status,
                        &u.message,
                        time::rfc3339_millis(u.at),
                    )
                })
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
    let page = Page::of(board.updated_at);
    Summary {
        components: components(active, &page),
        incidents: active
            .iter()
            .map(|i| StatuspageIncident::of(i, &page))
            .collect(),
        page,
        scheduled_maintenances: [],
        status: Status::of(active),
    }
}

pub fn unresolved(board: &Board) -> Unresolved<'_> {
    let page = Page::of(board.updated_at);
    Unresolved {
        incidents: board
            .active
            .iter()
            .map(|i| StatuspageIncident::of(i, &page))
            .collect(),
        page,
    }
}
