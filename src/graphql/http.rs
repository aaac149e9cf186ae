//! GraphQL over HTTP and WebSocket, and the GraphiQL playground. These handlers only read
//! the request and write the answer; how a document runs, on either transport, is decided
//! by [`GraphqlExecutor`].

use std::net::SocketAddr;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols};
use async_graphql_axum::GraphQLRequest;
use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};

use super::execute::{GraphqlExecutor, Route, with_codes};
use super::guard::{Auth, ClientAddress};
use super::loaders::{connection_loader, drive, request_loader};
use super::plain::RawLists;
use crate::auth::extract::MaybeBearer;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The GraphQL endpoint, its WebSocket and the playground, run by `executor`.
pub fn routes(executor: GraphqlExecutor) -> Router<AppState> {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/graphiql/{file}", get(graphiql_asset))
        .layer(Extension(executor))
}

/// `POST /graphql`.
async fn graphql(
    State(state): State<AppState>,
    Extension(executor): Extension<GraphqlExecutor>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bearer: MaybeBearer,
    req: GraphQLRequest,
) -> Response {
    let auth = match &bearer {
        MaybeBearer::Absent => Auth::Anonymous,
        MaybeBearer::Unreadable => Auth::Invalid,
        MaybeBearer::Header(header) => match state.service.authenticate(header).await {
            Ok(principal) => Auth::Principal(principal),
            Err(AppError::Unavailable) => Auth::Unavailable,
            Err(_) => Auth::Invalid,
        },
    };
    let (loader, tasks) = request_loader(state.service.clone());
    let operation = req.0.operation_name.clone();
    let started = std::time::Instant::now();
    let (response, raw) = match executor.prepare(req.into_inner(), &auth) {
        Route::Run(request, schema, checked) => {
            let raw = checked.unique_keys.then(RawLists::new);
            let mut request = request
                .data(auth)
                .data(loader)
                .data(ClientAddress(peer.ip()));
            if let Some(raw) = &raw {
                request = request.data(raw.clone());
            }
            (with_codes(drive(tasks, schema.execute(request)).await), raw)
        }
        Route::Refused(refused) => (refused, None),
    };
    state.service.metrics.graphql(
        operation.as_deref().unwrap_or("anonymous"),
        !response.errors.is_empty(),
        started.elapsed(),
    );
    answer(&response, raw.as_deref())
}

/// The HTTP answer to a GraphQL request, as `GraphQLResponse` writes it, with the plain
/// lists' JSON written in place when `raw` holds them.
fn answer(response: &async_graphql::Response, raw: Option<&RawLists>) -> Response {
    let written = match raw {
        Some(raw) => raw.write_response(response),
        None => serde_json::to_vec(response),
    };
    let body = match written {
        Ok(body) => body,
        Err(e) => {
            return AppError::Internal(format!("writing a GraphQL answer: {e}")).into_response();
        }
    };
    let mut answer = Response::new(Body::from(body));
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/graphql-response+json"),
    );
    if response.is_ok()
        && let Some(cache_control) = response.cache_control.value()
        && let Ok(value) = HeaderValue::from_str(&cache_control)
    {
        headers.insert(header::CACHE_CONTROL, value);
    }
    headers.extend(response.http_headers.clone());
    answer
}

/// `GET /graphql/ws`: subscriptions over graphql-transport-ws (and the older graphql-ws).
/// The token comes in `connection_init`; a missing or bad one closes the socket.
async fn graphql_ws(
    State(state): State<AppState>,
    Extension(executor): Extension<GraphqlExecutor>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
        })
        .unwrap_or(WebSocketProtocols::GraphQLWS);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve_ws(state, executor, socket, protocol))
}

async fn serve_ws(
    state: AppState,
    executor: GraphqlExecutor,
    socket: WebSocket,
    protocol: WebSocketProtocols,
) {
    let service = state.service.clone();
    let on_init = move |payload: serde_json::Value| async move {
        let bearer = ["Authorization", "authorization", "authToken", "token"]
            .iter()
            .find_map(|key| payload.get(*key).and_then(|v| v.as_str()))
            .or_else(|| payload["headers"]["Authorization"].as_str())
            .map_or(MaybeBearer::Absent, MaybeBearer::from_token);
        let header = bearer
            .required()
            .map_err(|_| async_graphql::Error::new("connection_init carries no token"))?;
        let principal = service
            .authenticate(header)
            .await
            .map_err(|_| async_graphql::Error::new("invalid token"))?;
        if !principal.role().is_person() {
            return Err(async_graphql::Error::new("devices cannot subscribe"));
        }
        let mut data = async_graphql::Data::default();
        data.insert(Auth::Principal(principal));
        data.insert(connection_loader(service));
        Ok(data)
    };
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|message| futures_util::future::ready(message.is_ok()))
        .filter_map(|message| {
            futures_util::future::ready(match message {
                Ok(WsMessage::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(WsMessage::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            })
        });
    let output = async_graphql::http::WebSocket::new(executor, input, protocol)
        .on_connection_init(on_init)
        .map(|message| match message {
            async_graphql::http::WsMessage::Text(text) => WsMessage::Text(text.into()),
            async_graphql::http::WsMessage::Close(code, reason) => {
                WsMessage::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }))
            }
        });
    let mut output = std::pin::pin!(output);
    let mut stopping = state.stopping.clone();
    let mut stop = std::pin::pin!(async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    });
    loop {
        tokio::select! {
            message = output.next() => match message {
                Some(message) => {
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            _ = &mut stop => {
                let _ = sink
                    .send(WsMessage::Close(Some(CloseFrame {
                        code: 1001,
                        reason: "server shutting down".into(),
                    })))
                    .await;
                return;
            }
        }
    }
}

const GRAPHIQL_HTML: &str = include_str!("../../assets/graphiql.html");

/// `GET /graphql`: the GraphiQL playground, served entirely from the binary.
async fn graphiql() -> Html<&'static str> {
    Html(GRAPHIQL_HTML)
}

/// The vendored GraphiQL assets.
async fn graphiql_asset(Path(file): Path<String>) -> AppResult<impl IntoResponse> {
    let (bytes, content_type): (&'static [u8], &str) = match file.as_str() {
        "graphiql.min.js" => (
            include_bytes!("../../assets/graphiql/graphiql.min.js"),
            "text/javascript",
        ),
        "graphiql.min.css" => (
            include_bytes!("../../assets/graphiql/graphiql.min.css"),
            "text/css",
        ),
        "react.production.min.js" => (
            include_bytes!("../../assets/graphiql/react.production.min.js"),
            "text/javascript",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
            "text/javascript",
        ),
        _ => return Err(AppError::NotFound("route")),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        Body::from(bytes),
    ))
}
