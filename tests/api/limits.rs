//! Query limits on every transport: introspection has bounded limits of its own, and a
//! document sent over `/graphql/ws` meets exactly the rules of `POST /graphql`.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::both_databases;
use crate::common::*;

both_databases!(
    graphiql_introspects_and_the_attacks_are_refused_on_both_transports,
    a_teacher_cannot_introspect_over_either_transport,
    every_websocket_error_carries_a_code,
    introspection_limits_hold_for_anonymous_callers_in_development,
    fragment_bombs_are_refused_before_the_engine_while_health_answers,
);

/// GraphiQL's own schema query, as its bundle sends it.
const GRAPHIQL_INTROSPECTION: &str = include_str!("data/graphiql-introspection.graphql");

/// `copies` aliased copies of a schema dump, the alias attack measured from outside.
fn alias_attack(copies: usize) -> String {
    let copy =
        "__schema { types { name fields { name args { name type { name ofType { name } } } } } }";
    let body: Vec<String> = (0..copies).map(|i| format!("a{i}: {copy}")).collect();
    format!("{{ {} }}", body.join(" "))
}

/// The same multiplication one level down, where the single-`__schema` rule cannot see it.
fn inner_alias_attack(copies: usize) -> String {
    let copy = "types { name fields { name args { name type { name ofType { name } } } } }";
    let body: Vec<String> = (0..copies).map(|i| format!("t{i}: {copy}")).collect();
    format!("{{ __schema {{ {} }} }}", body.join(" "))
}

/// A chain of `levels` nested `ofType` selections.
fn depth_attack(levels: usize) -> String {
    format!(
        "{{ __type(name: \"QueryRoot\") {{ {} name {} }} }}",
        "ofType { ".repeat(levels),
        "}".repeat(levels)
    )
}

/// Which way a document travels.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Http,
    WebSocket,
}

/// Sends `query` over `transport` as the holder of `token` and returns the response payload
/// (`{data, errors}`), as a client of that transport reads it.
async fn ask(app: &TestApp, transport: Transport, token: &str, query: &str) -> Value {
    match transport {
        Transport::Http => app.gql(Some(token), query, json!({})).await,
        Transport::WebSocket => ask_ws(&app.address, token, query).await,
    }
}

async fn ask_ws(address: &str, token: &str, query: &str) -> Value {
    let limit = Duration::from_secs(10);
    let mut socket = ws_connect(address, json!({"Authorization": format!("Bearer {token}")})).await;
    let ack = ws_next_message(&mut socket, limit).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
        .send(Message::text(
            json!({"id": "1", "type": "subscribe", "payload": {"query": query}}).to_string(),
        ))
        .await
        .unwrap();
    let message = ws_next_message(&mut socket, limit).await.expect("next");
    assert_eq!(message["type"], "next", "{message}");
    let complete = ws_next_message(&mut socket, limit).await.expect("complete");
    assert_eq!(complete["type"], "complete");
    message["payload"].clone()
}

/// Asserts `body` was refused before execution with a code, and returns the first message.
fn refused(body: &Value) -> String {
    assert!(
        body["data"].is_null(),
        "refused documents return no data: {body}"
    );
    let errors = body["errors"].as_array().expect("errors");
    assert!(!errors.is_empty(), "{body}");
    for error in errors {
        assert!(
            error["extensions"]["code"].is_string(),
            "every error carries a code: {error}"
        );
    }
    errors[0]["message"].as_str().unwrap().to_owned()
}

async fn graphiql_introspects_and_the_attacks_are_refused_on_both_transports(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let mut answers = Vec::new();
    for transport in [Transport::Http, Transport::WebSocket] {
        let full = ask(&app, transport, &admin, GRAPHIQL_INTROSPECTION).await;
        assert!(full.get("errors").is_none(), "{transport:?}: {full}");
        let types = full["data"]["__schema"]["types"].as_array().unwrap();
        assert!(
            types.iter().any(|t| t["name"] == "AttendanceSession"),
            "{transport:?}"
        );

        let before = app.statements.get();
        let aliases = ask(&app, transport, &admin, &alias_attack(100)).await;
        assert!(
            refused(&aliases).contains("__schema only once"),
            "{aliases}"
        );
        let inner = ask(&app, transport, &admin, &inner_alias_attack(100)).await;
        assert!(refused(&inner).contains("too complex"), "{inner}");
        let deep = ask(&app, transport, &admin, &depth_attack(40)).await;
        let message = refused(&deep);
        assert!(
            message.contains("too deep") || message.contains("nested too deep"),
            "{message}"
        );
        let mixed = ask(
            &app,
            transport,
            &admin,
            "{ __schema { types { name } } students { totalCount } }",
        )
        .await;
        assert!(refused(&mixed).contains("on its own"), "{mixed}");
        assert_eq!(mixed["errors"][0]["extensions"]["reason"], "QUERY_LIMIT");
        assert!(mixed["errors"][0].get("locations").is_none(), "{mixed}");
        // Refused before execution: nothing ran but the token check (HTTP: one lookup per
        // request; the socket checked its token once, at connection_init).
        assert!(
            app.statements.get() - before <= 4,
            "{transport:?} ran {} statements",
            app.statements.get() - before
        );
        answers.push((aliases, inner, deep, mixed));
    }
    assert_eq!(answers[0], answers[1], "both transports answer alike");
}

async fn a_teacher_cannot_introspect_over_either_transport(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let query = "{ __schema { types { name } } }";
    let http = ask(&app, Transport::Http, &school.teacher, query).await;
    let ws = ask(&app, Transport::WebSocket, &school.teacher, query).await;
    for body in [&http, &ws] {
        assert!(!body.to_string().contains("QueryRoot"), "{body}");
        assert!(body["data"]["__schema"].is_null(), "{body}");
    }
    assert_eq!(http, ws);
    let admin = ask(&app, Transport::WebSocket, &school.admin, query).await;
    assert!(admin.to_string().contains("QueryRoot"), "{admin}");
}

async fn every_websocket_error_carries_a_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let wide = "{ courses(first: 100) { edges { node { students { studentCode firstName lastName section { name depBatch { dep } } } } } } }";
    let unknown = "{ studnts { totalCount } }";
    let broken = "{ students { ";
    for query in [wide, unknown, broken] {
        let http = ask(&app, Transport::Http, &admin, query).await;
        let ws = ask(&app, Transport::WebSocket, &admin, query).await;
        refused(&ws);
        assert_eq!(ws["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(http, ws, "{query}");
    }
    let complex = ask(&app, Transport::WebSocket, &admin, wide).await;
    assert!(refused(&complex).contains("too complex"));
}

async fn introspection_limits_hold_for_anonymous_callers_in_development(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("DEBUG".into(), "true".into());
    })
    .await;
    let full = app.gql(None, GRAPHIQL_INTROSPECTION, json!({})).await;
    assert!(full.get("errors").is_none(), "{full}");
    for attack in [alias_attack(400), inner_alias_attack(100), depth_attack(40)] {
        let body = app.gql(None, &attack, json!({})).await;
        refused(&body);
    }
}

#[tokio::test]
async fn graphiql_fits_the_introspection_limits_with_room() {
    use attendance::graphql::execute::{INTROSPECTION_MAX_COMPLEXITY, INTROSPECTION_MAX_DEPTH};
    let (complexity, depth) = attendance::graphql::analyze(GRAPHIQL_INTROSPECTION).await;
    assert_eq!(depth, 15, "GraphiQL's type references nest to depth 15");
    assert!(depth < INTROSPECTION_MAX_DEPTH);
    assert!(
        complexity * 3 / 2 <= INTROSPECTION_MAX_COMPLEXITY,
        "{complexity}"
    );
    let (attack, _) = attendance::graphql::analyze(&inner_alias_attack(100)).await;
    assert!(attack > 2 * INTROSPECTION_MAX_COMPLEXITY, "{attack}");
}

/// The review's chain: each fragment selects two aliased fields that spread the next, so
/// `levels` levels stand for 2^levels selections in a few hundred bytes per level.
fn fragment_chain(levels: usize) -> String {
    let mut doc = String::from("{ me { ...F0 } }");
    for i in 0..levels {
        doc.push_str(&format!(
            " fragment F{i} on Viewer {{ a: teacher {{ ...F{n} }} b: teacher {{ ...F{n} }} }}",
            n = i + 1
        ));
    }
    doc + &format!(" fragment F{levels} on Viewer {{ username }}")
}

/// The review's fan-out: 8 levels, each spreading the next 10 times.
fn fragment_fan_out() -> String {
    let mut doc = String::from("{ me { ...F0 } }");
    for i in 0..8 {
        let spreads: Vec<String> = (0..10)
            .map(|j| format!("a{j}: teacher {{ ...F{} }}", i + 1))
            .collect();
        doc.push_str(&format!(
            " fragment F{i} on Viewer {{ {} }}",
            spreads.join(" ")
        ));
    }
    doc + " fragment F8 on Viewer { username }"
}

async fn fragment_bombs_are_refused_before_the_engine_while_health_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The real binary, with its own runtime: a document that blocked its threads would leave
    // this test's deadline free to fire, instead of blocking the test with it.
    let server = ServerCommand::with_test_env(&app.db.url).start().await;
    let bombs = [
        fragment_chain(24),
        fragment_chain(32),
        fragment_fan_out(),
        "{ me { ...A } } fragment A on Viewer { teacher { ...B } } fragment B on Teacher { ...A }"
            .to_owned(),
    ];
    // Two in flight at once (as many as the runtime has threads on this machine), /health
    // asked meanwhile. Unmeasured, these held both threads for minutes.
    let deadline = Duration::from_secs(20);
    let health = http_client();
    for pair in bombs.chunks(2) {
        let sent = pair.iter().map(|doc| server.gql(None, doc, json!({})));
        let (answers, health) = tokio::time::timeout(
            deadline,
            futures_util::future::join(
                futures_util::future::join_all(sent),
                health.get(format!("{}/health", server.address)).send(),
            ),
        )
        .await
        .expect("the documents are answered and /health answers meanwhile");
        assert_eq!(health.expect("health").status().as_u16(), 200);
        for body in answers {
            refused(&body);
            let error = &body["errors"][0];
            assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{body}");
            assert_eq!(error["extensions"]["reason"], "QUERY_LIMIT", "{body}");
        }
    }
    // The same documents over the socket meet the same measure.
    let admin = app.admin_token().await;
    for doc in &bombs[1..3] {
        let body = tokio::time::timeout(deadline, ask_ws(&server.address, &admin, doc))
            .await
            .expect("answered over the socket");
        assert_eq!(
            body["errors"][0]["extensions"]["reason"], "QUERY_LIMIT",
            "{body}"
        );
    }
    // A document that spreads one fragment twice, well within the budget, still runs.
    let fine = server
        .gql(
            Some(&admin),
            "{ me { ...F } } fragment F on Viewer { a: username b: username }",
            json!({}),
        )
        .await;
    assert_eq!(fine["data"]["me"]["a"], ADMIN_USER, "{fine}");
}
