//! The REST API for new integrations, under `/api/v1` (see `openapi.json` there): a bearer
//! token (`Authorization: Bearer ...`, `DUNNAGE_API_TOKENS`) that sees only its profiles;
//! another profile's anything is 404. The handlers call what the CLI calls (`list`).
//!
//! So far: `GET /api/v1/profiles`, `GET /api/v1/profiles/{name}/backups`,
//! `GET /api/v1/openapi.json`.

use serde_json::{Value, json};

use super::list;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::tokens::{Scope, Token};

/// `GET /api/v1/profiles`: each visible profile with its schedule, next run and last run.
pub fn profiles(configs: &[Config], metrics: &Metrics, token: &Token) -> Value {
    Value::Array(
        configs
            .iter()
            .filter(|c| token.sees(&c.name))
            .map(|c| {
                let now = jiff::Zoned::now().with_time_zone(c.time_zone.clone());
                let next = c
                    .cron
                    .next_after(&now)
                    .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string());
                let last = metrics
                    .last_run(&c.name)
                    .map(|(outcome, at)| json!({"outcome": outcome, "ended": at}));
                json!({
                    "name": c.name,
                    "schedule": c.cron.describe(),
                    "next_run": next,
                    "last_run": last,
                    "destinations": c.targets().describe(),
                })
            })
            .collect(),
    )
}

/// `GET /api/v1/profiles/{name}/backups`: what `dunnage list --config NAME --json` prints;
/// `None` when the token does not see the profile.
pub async fn backups(configs: &[Config], token: &Token, name: &str) -> Option<Value> {
    let config = configs
        .iter()
        .find(|c| c.name == name && token.sees(name))?;
    if !token.allows(Scope::Read) {
        return None;
    }
    let listed = list::collect(std::slice::from_ref(config), None).await;
    Some(serde_json::to_value(listed).unwrap_or(Value::Null))
}

/// The OpenAPI document of what is served.
pub fn openapi() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "dunnage", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": {
            "/api/v1/profiles": {"get": {
                "summary": "The profiles (schedules) this token sees",
                "responses": {"200": {"description": "name, schedule, next_run, last_run, destinations of each"},
                              "401": {"description": "no or unknown token"}}
            }},
            "/api/v1/profiles/{name}/backups": {"get": {
                "summary": "The profile's backups in each destination, oldest first (as dunnage list --json)",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "schedule, destination, name, size, modified, parts, manifest, verified; or error per destination"},
                              "401": {"description": "no or unknown token"},
                              "404": {"description": "no such profile for this token"}}
            }},
            "/healthz": {"get": {"security": [], "summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"security": [], "summary": "Prometheus metrics (OpenMetrics text)", "responses": {"200": {"description": "the exposition"}}}}
        }
    })
}
