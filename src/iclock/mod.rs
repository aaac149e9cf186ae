//! The ZKTeco push protocol ("iclock", PUSH SDK / ADMS) as face terminals speak it:
//!
//! - `GET /iclock/cdata?SN=...&options=all&pushver=...`: the handshake, answered with the
//!   terminal's options (`GET OPTION FROM: <SN>` and `key=value` lines);
//! - `POST /iclock/cdata?SN=...&table=ATTLOG&Stamp=...`: uploads, answered `OK: <n>` for
//!   attendance and `OK` for any other table;
//! - `GET /iclock/getrequest?SN=...`: polls, answered `OK` or `C:<id>:<command>` lines;
//! - `POST /iclock/devicecmd?SN=...`: command results, answered `OK`.
//!
//! A terminal is the device with that serial number; unknown, pending and revoked
//! terminals get 403. Handlers only read the request and write the text; the rules live
//! in [`crate::service::terminals`], the text formats in [`crate::service::terminals::protocol`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::entities::device;
use crate::error::AppResult;
use crate::service::terminals::protocol::{OK, commands_reply, options_reply, taken_reply};
use crate::service::terminals::{TerminalReport, UploadReply};
use crate::state::AppState;

/// The query string of an iclock request, as pairs (terminals vary the case of keys).
type Params = Query<Vec<(String, String)>>;

/// The iclock routes; `app` gives them their own body limit.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/iclock/cdata", get(handshake).post(upload))
        .route("/iclock/getrequest", get(poll))
        .route("/iclock/devicecmd", post(command_results))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The approved, active terminal sending the request.
async fn terminal(state: &AppState, params: &[(String, String)]) -> AppResult<device::Model> {
    let serial = param(params, "SN").unwrap_or_default();
    let report = TerminalReport {
        push_version: param(params, "pushver"),
        info: param(params, "INFO"),
    };
    state.service.terminal_contact(serial, report).await
}

/// A `text/plain` reply. Lines end with `\n` as real servers' do; a bare acknowledgement
/// (`OK`, `OK: 3`) has no line ending, like theirs.
fn text(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn reply(result: AppResult<String>) -> Response {
    match result {
        Ok(body) => text(body),
        Err(err) => err.into_response(),
    }
}

/// `GET /iclock/cdata`: the handshake.
async fn handshake(State(state): State<AppState>, Query(params): Params) -> Response {
    reply(
        async {
            let device = terminal(&state, &params).await?;
            let options = state.service.terminal_options(&device).await?;
            let serial = device.serial_number.as_deref().unwrap_or_default();
            Ok(options_reply(serial, &options))
        }
        .await,
    )
}

/// `POST /iclock/cdata`: an upload of one table.
async fn upload(State(state): State<AppState>, Query(params): Params, body: Bytes) -> Response {
    reply(
        async {
            let device = terminal(&state, &params).await?;
            let table = param(&params, "table").unwrap_or_default();
            let stamp = param(&params, "Stamp");
            // Names in other tables may come in a legacy encoding; attendance is ASCII.
            let body = String::from_utf8_lossy(&body);
            let reply = state
                .service
                .terminal_upload(&device, table, stamp, &body)
                .await?;
            Ok(match reply {
                UploadReply::Taken(n) => taken_reply(n),
                UploadReply::Ok => OK.to_owned(),
            })
        }
        .await,
    )
}

/// `GET /iclock/getrequest`: hands out queued commands, or `OK` when there are none.
async fn poll(State(state): State<AppState>, Query(params): Params) -> Response {
    reply(
        async {
            let device = terminal(&state, &params).await?;
            let commands = state.service.terminal_poll(&device).await?;
            Ok(commands_reply(
                commands.iter().map(|c| (c.id, c.command.as_str())),
            ))
        }
        .await,
    )
}

/// `POST /iclock/devicecmd`: results of commands, one `ID=..&Return=..&CMD=..` per line.
async fn command_results(
    State(state): State<AppState>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    reply(
        async {
            let device = terminal(&state, &params).await?;
            let body = String::from_utf8_lossy(&body);
            state
                .service
                .terminal_command_results(&device, &body)
                .await?;
            Ok(OK.to_owned())
        }
        .await,
    )
}
