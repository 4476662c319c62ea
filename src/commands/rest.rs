//! The REST API for new integrations, under `/api/v1` (described by `openapi.json` there): a
//! bearer token (`Authorization: Bearer ...`, `DUNNAGE_API_TOKENS`) sees only its profiles;
//! another profile's anything is 404, a missing scope 403. Each handler calls what the CLI
//! and the scheduler call (`list`, `runs`, `profiles`, `prune`, `check`); nothing is decided
//! here that the command line could not do too.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::list;
use super::runs::{Job, Run, State as RunState, Trigger};
use super::serve::Api;
use crate::catalog::{self, Backup};
use crate::config::{Config, Problem};
use crate::manifest::Level;
use crate::storage::{self, Backend, Storage};
use crate::tokens::{Scope, Token};

/// How often a followed run's state is looked at for changes.
const EVENT_EVERY: Duration = Duration::from_millis(250);

/// The `/api/v1` routes.
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(|| async { axum::Json(openapi()) }),
        )
        .route("/api/v1/profiles", get(profiles))
        .route(
            "/api/v1/profiles/{name}",
            get(profile).put(put_profile).delete(delete_profile),
        )
        .route("/api/v1/profiles/{name}/check", post(check))
        .route("/api/v1/profiles/{name}/backups", get(backups))
        .route(
            "/api/v1/profiles/{name}/backups/{backup}",
            axum::routing::delete(delete_backup),
        )
        .route(
            "/api/v1/profiles/{name}/backups/{backup}/download",
            get(download),
        )
        .route(
            "/api/v1/profiles/{name}/runs",
            get(profile_runs).post(start_run),
        )
        .route("/api/v1/runs/{id}", get(run_status))
        .route("/api/v1/runs/{id}/log", get(run_log))
        .route("/api/v1/runs/{id}/events", get(run_events))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
}

/// A handler's answer; `Err` for the refusals (`?` returns them).
type Reply = Result<Response, ApiError>;

/// A refusal: its status and JSON body (`{"error": ...}` mostly).
#[derive(Debug)]
struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, axum::Json(self.1)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("a valid value"),
            );
        }
        response
    }
}

fn reply(status: StatusCode, body: Value) -> Reply {
    Ok((status, axum::Json(body)).into_response())
}

fn problem(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
    ApiError(status, json!({"error": message.to_string()}))
}

fn not_found() -> ApiError {
    problem(StatusCode::NOT_FOUND, "no such profile, run or backup")
}

/// The token of a request allowed `scope` (on `profile`, when given): 401 without a valid
/// token, 404 for a profile it does not see, 403 without the scope.
fn auth<'a>(
    api: &'a Api,
    headers: &HeaderMap,
    scope: Scope,
    profile: Option<&str>,
) -> Result<&'a Token, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| api.tokens.check(t.trim()))
        .ok_or_else(|| problem(StatusCode::UNAUTHORIZED, "a valid bearer token is needed"))?;
    if profile.is_some_and(|p| !token.sees(p)) {
        return Err(not_found());
    }
    if !token.allows(scope) {
        return Err(problem(
            StatusCode::FORBIDDEN,
            format!("this token lacks the {scope:?} scope"),
        ));
    }
    Ok(token)
}

/// The profile `name` if the token may use it with `scope`.
fn profile_for(
    api: &Api,
    headers: &HeaderMap,
    scope: Scope,
    name: &str,
) -> Result<Config, ApiError> {
    auth(api, headers, scope, Some(name))?;
    api.profiles.get(name).ok_or_else(not_found)
}

/// The run `id` if the token sees its profile.
fn run_for(api: &Api, headers: &HeaderMap, scope: Scope, id: &str) -> Result<Arc<Run>, ApiError> {
    auth(api, headers, scope, None)?;
    let run = api.runs.get(id).ok_or_else(not_found)?;
    auth(api, headers, scope, Some(&run.profile))?;
    Ok(run)
}

/// Every problem of a refused profile, as `{variable, value, message}` (values of secrets
/// redacted by [`Problem`]).
fn problems(list: &[Problem]) -> Reply {
    reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"problems": list.iter().map(|p| json!({
            "variable": p.var, "value": p.value, "message": p.message,
        })).collect::<Vec<_>>()}),
    )
}

/// `GET /api/v1/profiles`: each visible profile with its schedule, next run and last run.
async fn profiles(State(api): State<Arc<Api>>, headers: HeaderMap) -> Reply {
    let token = auth(&api, &headers, Scope::Read, None)?;
    let all = api.profiles.all();
    let listed: Vec<Value> = all
        .iter()
        .filter(|c| token.sees(&c.name))
        .map(|c| summary(&api, c))
        .collect();
    reply(StatusCode::OK, Value::Array(listed))
}

fn summary(api: &Api, c: &Config) -> Value {
    let now = jiff::Zoned::now().with_time_zone(c.time_zone.clone());
    let next = c
        .cron
        .next_after(&now)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string());
    let last = api
        .metrics
        .last_run(&c.name)
        .map(|(outcome, at)| json!({"outcome": outcome, "ended": at}));
    json!({
        "name": c.name,
        "schedule": c.cron.describe(),
        "next_run": next,
        "last_run": last,
        "active_run": api.runs.active(&c.name).map(|r| r.id.clone()),
        "destinations": c.targets().describe(),
    })
}

/// `GET /api/v1/profiles/{name}`: the summary and its settings as print-config shows them
/// (secrets redacted).
async fn profile(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let config = profile_for(&api, &headers, Scope::Read, &name)?;
    let mut out = summary(&api, &config);
    out["settings"] = config
        .describe()
        .into_iter()
        .map(|(k, v, origin)| (k.to_owned(), json!({"value": v, "from": origin})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    reply(StatusCode::OK, out)
}

#[derive(serde::Deserialize)]
struct ProfileBody {
    settings: BTreeMap<String, String>,
}

/// `PUT /api/v1/profiles/{name}` (admin): creates or replaces the profile's conf.d file.
async fn put_profile(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    auth(&api, &headers, Scope::Admin, Some(&name))?;
    let body: ProfileBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"settings\": {{\"VARIABLE\": \"value\", ...}}}}: {e}"),
            ));
        }
    };
    match api.profiles.put(&name, &body.settings).await {
        Ok(created) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            match api.profiles.get(&name) {
                Some(config) => reply(status, summary(&api, &config)),
                None => reply(status, json!({"name": name})),
            }
        }
        Err(list) => problems(&list),
    }
}

/// `DELETE /api/v1/profiles/{name}` (admin): removes the profile; its backups stay.
async fn delete_profile(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Reply {
    auth(&api, &headers, Scope::Admin, Some(&name))?;
    match api.profiles.delete(&name).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(not_found()),
        Err(list) => problems(&list),
    }
}

/// `POST /api/v1/profiles/{name}/check`: can each destination be reached, listed, written
/// (a small object written and deleted), as `dunnage check --write`.
async fn check(State(api): State<Arc<Api>>, Path(name): Path<String>, headers: HeaderMap) -> Reply {
    let config = profile_for(&api, &headers, Scope::Run, &name)?;
    let mut out = Vec::new();
    let ok = super::check::check_destinations(&config, true, &mut out).await;
    let report = crate::secrets::redact(&String::from_utf8_lossy(&out)).into_owned();
    reply(StatusCode::OK, json!({"ok": ok, "report": report}))
}

/// `GET /api/v1/profiles/{name}/backups`: what `dunnage list --config NAME --json` prints.
async fn backups(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let config = profile_for(&api, &headers, Scope::Read, &name)?;
    let listed = list::collect(std::slice::from_ref(&config), None).await;
    reply(
        StatusCode::OK,
        serde_json::to_value(listed).unwrap_or(Value::Null),
    )
}

#[derive(serde::Deserialize)]
struct Where {
    destination: Option<String>,
}

fn destination(raw: Option<&str>) -> Result<Option<Backend>, ApiError> {
    raw.map(|d| {
        Backend::parse(d).ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                format!("destination={d:?}: expected {}", Backend::choices_text()),
            )
        })
    })
    .transpose()
}

/// `DELETE /api/v1/profiles/{name}/backups/{backup}[?destination=]`: from every destination
/// holding it, or one; never a profile's only backup in a destination (409).
async fn delete_backup(
    State(api): State<Arc<Api>>,
    Path((name, backup)): Path<(String, String)>,
    Query(at): Query<Where>,
    headers: HeaderMap,
) -> Reply {
    let config = profile_for(&api, &headers, Scope::Delete, &name)?;
    let from = destination(at.destination.as_deref())?;
    use super::prune::DeleteError;
    match super::prune::delete_named(&config, &backup, from).await {
        Ok(done) => reply(
            StatusCode::OK,
            json!({"deleted": backup, "from": done.iter().map(|b| b.name()).collect::<Vec<_>>()}),
        ),
        Err(DeleteError::NotFound(_)) => Err(not_found()),
        Err(e @ DeleteError::OnlyBackup(..)) => Err(problem(StatusCode::CONFLICT, e)),
        Err(e) => Err(problem(StatusCode::BAD_GATEWAY, e)),
    }
}

/// The backup `name` as the first listable destination (or `from`) has it.
async fn find_backup(
    config: &Config,
    name: &str,
    from: Option<Backend>,
) -> Result<(Box<dyn Storage>, Backup), ApiError> {
    let (owned, _) = storage::open_all(&config.targets()).await;
    let mut failure = None;
    for storage in owned
        .into_iter()
        .filter(|s| from.is_none_or(|f| f == s.backend()))
    {
        match storage.list().await {
            Ok(entries) => {
                let catalog = catalog::group(&entries, &config.retention.select);
                if let Some(backup) = catalog.find(name).cloned() {
                    return Ok((storage, backup));
                }
            }
            Err(e) => failure = Some(format!("{}: {e}", storage.backend())),
        }
    }
    Err(match failure {
        Some(e) => problem(StatusCode::BAD_GATEWAY, e),
        None => not_found(),
    })
}

/// `GET .../backups/{backup}/download[?destination=]`: the whole backup (its parts one after
/// another, which is the archive), streamed, with `Range` for resuming.
async fn download(
    State(api): State<Arc<Api>>,
    Path((name, backup)): Path<(String, String)>,
    Query(at): Query<Where>,
    headers: HeaderMap,
) -> Reply {
    let config = profile_for(&api, &headers, Scope::Read, &name)?;
    let from = destination(at.destination.as_deref())?;
    let (storage, backup) = find_backup(&config, &backup, from).await?;
    let total = backup.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(raw) => match parse_range(raw, total) {
            Ok(r) => r,
            Err(()) => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{total}"))],
                )
                    .into_response());
            }
        },
    };
    let (start, end) = range.unwrap_or((0, total));
    let body = ranged(storage, backup.objects.clone(), start, end);
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, k, v: String| {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    };
    set(h, header::CONTENT_TYPE, "application/octet-stream".into());
    set(h, header::CONTENT_LENGTH, (end - start).to_string());
    set(h, header::ACCEPT_RANGES, "bytes".into());
    set(
        h,
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{}\"", backup.name.replace('"', "")),
    );
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        set(
            response.headers_mut(),
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{total}", end.saturating_sub(1)),
        );
    }
    Ok(response)
}

/// One `bytes=` range of `total` as `[start, end)`; `Ok(None)` for what is served whole
/// (several ranges); `Err` when it cannot be satisfied.
fn parse_range(raw: &str, total: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        (total.saturating_sub(n), total)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = match b {
            "" => total,
            b => b
                .parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(total),
        };
        (start, end)
    };
    if start >= end || start >= total {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// The bytes `[start, end)` of `objects` read one after another from `storage`: objects
/// before `start` are not read; the first read one is skipped into (a destination's `get`
/// streams from the beginning).
fn ranged(
    storage: Box<dyn Storage>,
    objects: Vec<storage::Entry>,
    start: u64,
    end: u64,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    let mut offset = 0;
    let placed: Vec<(u64, storage::Entry)> = objects
        .into_iter()
        .map(|o| {
            offset += o.size;
            (offset - o.size, o)
        })
        .filter(|(from, o)| from + o.size > start && *from < end)
        .collect();
    let state = Ranged {
        storage,
        objects: placed.into_iter(),
        current: None,
        start,
        end,
    };
    futures_util::stream::try_unfold(state, |mut st| async move {
        loop {
            let Some(cur) = st.current.as_mut() else {
                let Some((from, object)) = st.objects.next() else {
                    return Ok(None);
                };
                let data = st
                    .storage
                    .get(&object.name)
                    .await
                    .map_err(std::io::Error::other)?;
                st.current = Some(Reading {
                    data,
                    at: from,
                    stop: st.end.min(from + object.size),
                    from,
                    object,
                });
                continue;
            };
            if cur.at >= cur.stop {
                st.current = None;
                continue;
            }
            let Some(chunk) = cur.data.next().await else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ended after {} of {} bytes",
                        cur.object.name,
                        cur.at - cur.from,
                        cur.object.size
                    ),
                ));
            };
            let chunk = chunk?;
            let (a, b) = (cur.at, cur.at + chunk.len() as u64);
            cur.at = b;
            if b > st.start && a < cur.stop {
                let lo = st.start.saturating_sub(a) as usize;
                let hi = (cur.stop.min(b) - a) as usize;
                return Ok(Some((chunk.slice(lo..hi), st)));
            }
        }
    })
}

/// Where a ranged download is.
struct Ranged {
    storage: Box<dyn Storage>,
    objects: std::vec::IntoIter<(u64, storage::Entry)>,
    current: Option<Reading>,
    start: u64,
    end: u64,
}

/// The object being read, at `at` of the whole (it holds `[from, from + size)`).
struct Reading {
    data: crate::stream::ByteStream,
    at: u64,
    stop: u64,
    from: u64,
    object: storage::Entry,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    kind: Option<String>,
    /// verify: a backup's name, `latest` or `all`; restore: a name or `latest`.
    backup: Option<String>,
    /// verify: size, hash or read.
    level: Option<String>,
    /// restore: a folder (admin tokens only); without it, in place.
    target: Option<String>,
    #[serde(default)]
    overwrite: bool,
    strip_components: Option<usize>,
    #[serde(default)]
    safety_backup: bool,
    destination: Option<String>,
}

/// `POST /api/v1/profiles/{name}/runs`: a backup (default), verify or restore run queued
/// now: 202 with the run, or 409 with the profile's run that has not ended.
async fn start_run(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return Err(problem(StatusCode::BAD_REQUEST, e)),
        }
    };
    let (job, scope) = job_of(request)?;
    let config = profile_for(&api, &headers, scope, &name)?;
    if let Job::Restore(r) = &job
        && r.target.is_some()
    {
        // Writing anywhere on this host is an administrator's call.
        auth(&api, &headers, Scope::Admin, Some(&name))?;
    }
    match api.runs.start(&config, job, Trigger::Api) {
        Ok(run) => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/v1/runs/{}", run.id))],
            axum::Json(run.describe()),
        )
            .into_response()),
        Err(active) => reply(
            StatusCode::CONFLICT,
            json!({"error": "this profile has a run that has not ended", "run": active.describe()}),
        ),
    }
}

/// The job a request asks for, and the scope it needs.
fn job_of(r: RunRequest) -> Result<(Job, Scope), ApiError> {
    let bad = |m: String| problem(StatusCode::BAD_REQUEST, m);
    let from = destination(r.destination.as_deref())?;
    match r.kind.as_deref().unwrap_or("backup") {
        "backup" => Ok((Job::Backup, Scope::Run)),
        "verify" => {
            let level = match r.level.as_deref().unwrap_or("read") {
                "size" => Level::Size,
                "hash" => Level::Hash,
                "read" => Level::Read,
                other => return Err(bad(format!("level={other:?}: expected size, hash or read"))),
            };
            let which = r.backup.unwrap_or_else(|| "latest".into());
            Ok((Job::Verify { which, level }, Scope::Run))
        }
        "restore" => {
            let Some(which) = r.backup else {
                return Err(bad("restore needs \"backup\": a name or \"latest\"".into()));
            };
            let request = super::restore::Request {
                which,
                from,
                target: r.target.map(std::path::PathBuf::from),
                strip_components: r.strip_components,
                overwrite: r.overwrite,
                safety_backup: r.safety_backup,
            };
            Ok((Job::Restore(request), Scope::Restore))
        }
        other => Err(bad(format!(
            "kind={other:?}: expected backup, verify or restore"
        ))),
    }
}

/// `GET /api/v1/profiles/{name}/runs`: its remembered runs, newest first.
async fn profile_runs(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Reply {
    profile_for(&api, &headers, Scope::Read, &name)?;
    let runs: Vec<Value> = api.runs.of(&name).iter().map(|r| r.describe()).collect();
    reply(StatusCode::OK, Value::Array(runs))
}

/// `GET /api/v1/runs/{id}`.
async fn run_status(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let run = run_for(&api, &headers, Scope::Read, &id)?;
    reply(StatusCode::OK, run.describe())
}

/// `GET /api/v1/runs/{id}/log`: its log so far (secrets taken out).
async fn run_log(State(api): State<Arc<Api>>, Path(id): Path<String>, headers: HeaderMap) -> Reply {
    let run = run_for(&api, &headers, Scope::Read, &id)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        crate::secrets::redact(&run.live.log()).into_owned(),
    )
        .into_response())
}

/// `POST /api/v1/runs/{id}/cancel`: 202, or 409 when it has ended.
async fn cancel_run(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let run = run_for(&api, &headers, Scope::Run, &id)?;
    if run.cancel() {
        reply(StatusCode::ACCEPTED, run.describe())
    } else {
        reply(
            StatusCode::CONFLICT,
            json!({"error": "the run has ended", "run": run.describe()}),
        )
    }
}

/// `GET /api/v1/runs/{id}/events`: server-sent events, a `state` event each time the run's
/// phase, counters or destinations change, then one `end` event, then the stream closes.
async fn run_events(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let run = run_for(&api, &headers, Scope::Read, &id)?;
    let events =
        futures_util::stream::unfold((run, None, false), |(run, last, ended)| async move {
            if ended {
                return None;
            }
            let mut last: Option<Value> = last;
            loop {
                let now = run.describe();
                if matches!(run.state(), RunState::Finished(_)) {
                    let event = Event::default().event("end").data(now.to_string());
                    return Some((Ok::<_, Infallible>(event), (run, None, true)));
                }
                if last.as_ref() != Some(&now) {
                    let event = Event::default().event("state").data(now.to_string());
                    return Some((Ok(event), (run, Some(now), false)));
                }
                tokio::select! {
                    _ = run.finished() => {}
                    () = tokio::time::sleep(EVENT_EVERY) => {}
                }
                last = Some(now);
            }
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The OpenAPI document of what is served.
pub fn openapi() -> Value {
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let backup =
        json!({"name": "backup", "in": "path", "required": true, "schema": {"type": "string"}});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let dest = json!({"name": "destination", "in": "query", "required": false,
                      "schema": {"type": "string", "enum": Backend::choices()}});
    let r = |code: &str, what: &str| (code.to_owned(), json!({"description": what}));
    let responses = |list: &[(&str, &str)]| -> Value {
        let mut all: serde_json::Map<String, Value> = list.iter().map(|(c, w)| r(c, w)).collect();
        all.insert("401".into(), json!({"description": "no or unknown token"}));
        Value::Object(all)
    };
    let not_seen = ("404", "no such profile (or run, backup) for this token");
    let scope = ("403", "the token lacks the scope");
    json!({
        "openapi": "3.1.0",
        "info": {"title": "dunnage", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Scopes: read (GET), run (backup and verify runs, check, cancel), restore, delete, admin (profiles; everything)."},
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": {
            "/api/v1/profiles": {"get": {
                "summary": "The profiles (schedules) this token sees: name, schedule, next_run, last_run, active_run, destinations",
                "responses": responses(&[("200", "the profiles")]),
            }},
            "/api/v1/profiles/{name}": {
                "parameters": [name],
                "get": {"summary": "One profile and its settings (secrets redacted)",
                        "responses": responses(&[("200", "the profile"), not_seen])},
                "put": {"summary": "Create or replace the profile (admin): body {\"settings\": {\"VARIABLE\": \"value\"}}, validated like a conf.d file; written atomically; picked up at once",
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {
                            "type": "object", "required": ["settings"],
                            "properties": {"settings": {"type": "object", "additionalProperties": {"type": "string"}}}}}}},
                        "responses": responses(&[("201", "created"), ("200", "replaced"), ("422", "every problem: {problems: [{variable, value, message}]}; nothing written"), scope])},
                "delete": {"summary": "Delete the profile (admin); its backups stay",
                           "responses": responses(&[("204", "deleted"), not_seen, scope])},
            },
            "/api/v1/profiles/{name}/check": {"post": {
                "parameters": [name],
                "summary": "Test the destinations: reach, list, write and delete a small object",
                "responses": responses(&[("200", "{ok, report}"), not_seen, scope]),
            }},
            "/api/v1/profiles/{name}/backups": {"get": {
                "parameters": [name],
                "summary": "The profile's backups in each destination, oldest first (as dunnage list --json)",
                "responses": responses(&[("200", "schedule, destination, name, size, modified, parts, manifest, verified; or error per destination"), not_seen]),
            }},
            "/api/v1/profiles/{name}/backups/{backup}": {"delete": {
                "parameters": [name, backup, dest],
                "summary": "Delete a listed backup from every destination holding it (or one)",
                "responses": responses(&[("200", "{deleted, from}"), ("409", "it is the profile's only backup in a destination; nothing deleted"), not_seen, scope]),
            }},
            "/api/v1/profiles/{name}/backups/{backup}/download": {"get": {
                "parameters": [name, backup, dest],
                "summary": "The stored backup (parts joined), streamed; Range (one range) supported",
                "responses": responses(&[("200", "the bytes"), ("206", "the range"), ("416", "range not satisfiable"), not_seen]),
            }},
            "/api/v1/profiles/{name}/runs": {
                "parameters": [name],
                "get": {"summary": "The profile's remembered runs, newest first",
                        "responses": responses(&[("200", "runs"), not_seen])},
                "post": {"summary": "Start a run: {} or {kind: backup}; {kind: verify, backup: latest|all|NAME, level: size|hash|read}; {kind: restore, backup: NAME|latest, overwrite, safety_backup, strip_components, target (admin)}; destination for verify and restore",
                         "responses": responses(&[("202", "queued: the run (Location: /api/v1/runs/ID)"), ("409", "the profile's run that has not ended"), ("400", "a bad request"), not_seen, scope])},
            },
            "/api/v1/runs/{id}": {"get": {"parameters": [id.clone()], "summary": "A run: state (queued, running, finished), phase, progress, destinations, outcome, result",
                                          "responses": responses(&[("200", "the run"), not_seen])}},
            "/api/v1/runs/{id}/log": {"get": {"parameters": [id.clone()], "summary": "The run's log (text)",
                                              "responses": responses(&[("200", "text/plain"), not_seen])}},
            "/api/v1/runs/{id}/events": {"get": {"parameters": [id.clone()], "summary": "Server-sent events: `state` (the run, on each change), then `end`",
                                                 "responses": responses(&[("200", "text/event-stream"), not_seen])}},
            "/api/v1/runs/{id}/cancel": {"post": {"parameters": [id], "summary": "Cancel a queued or running run (an unfinished upload is removed, containers started again)",
                                                  "responses": responses(&[("202", "cancelling"), ("409", "it has ended"), not_seen, scope])}},
            "/healthz": {"get": {"security": [], "summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"security": [], "summary": "Prometheus metrics (OpenMetrics text)", "responses": {"200": {"description": "the exposition"}}}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_http_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=95-200", 100), Ok(Some((95, 100))));
        assert_eq!(parse_range("bytes=-200", 100), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Err(()));
        assert_eq!(parse_range("bytes=x-", 100), Err(()));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }
}
