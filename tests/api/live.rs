//! Live roll call: subscriptions over graphql-transport-ws, in one process and across two.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_subscriber_sees_scans_edits_and_the_close_with_counts,
    a_missing_or_bad_token_closes_the_socket_without_events,
    only_the_sessions_teacher_and_admins_may_subscribe,
    a_lagging_subscriber_is_told_to_resynchronise,
    an_excuse_and_its_revocation_reach_subscribers_as_edits,
);

const UPDATES: &str = "subscription($id: ID!) { attendanceUpdates(sessionId: $id) { kind sessionId record { status student { studentCode } } counts { present absent permission notYetScanned } } }";

/// Subscribes to a session's updates and waits for the initial snapshot.
async fn subscribe(address: &str, token: &str, session_id: &str) -> (Socket, Value) {
    let mut socket = ws_connect(address, json!({"Authorization": format!("Bearer {token}")})).await;
    let ack = ws_next_message(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
        .send(Message::text(
            json!({"id": "1", "type": "subscribe", "payload": {"query": UPDATES, "variables": {"id": session_id}}}).to_string(),
        ))
        .await
        .unwrap();
    let snapshot = next_update(&mut socket).await;
    (socket, snapshot)
}

async fn next_update(socket: &mut Socket) -> Value {
    let message = ws_next_message(socket, Duration::from_secs(5))
        .await
        .expect("socket closed");
    assert_eq!(message["type"], "next", "{message}");
    message["payload"].clone()
}

async fn a_subscriber_sees_scans_edits_and_the_close_with_counts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let session = app.open_session(&school).await;
    let (mut socket, snapshot) = subscribe(&app.address, &school.teacher, &session).await;
    let update = &snapshot["data"]["attendanceUpdates"];
    assert_eq!(update["kind"], "SNAPSHOT");
    assert_eq!(
        update["counts"],
        json!({"present": 0, "absent": 0, "permission": 0, "notYetScanned": 4})
    );

    let (status, record) = app
        .scan_today(&school, &school.students[0], "08:00:00")
        .await;
    assert_eq!(status, 201);
    let scan = next_update(&mut socket).await;
    let update = &scan["data"]["attendanceUpdates"];
    assert_eq!(update["kind"], "SCAN");
    assert_eq!(update["record"]["status"], "PRESENT");
    assert_eq!(update["record"]["student"]["studentCode"], "ST0000");
    assert_eq!(update["counts"]["present"], 1);
    assert_eq!(update["counts"]["notYetScanned"], 3);

    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PERMISSION) { id } }",
        json!({"id": record["id"].to_string()}),
    )
    .await;
    let edit = next_update(&mut socket).await;
    assert_eq!(edit["data"]["attendanceUpdates"]["kind"], "EDIT");
    assert_eq!(edit["data"]["attendanceUpdates"]["counts"]["permission"], 1);

    app.close_session(&school.teacher, &session).await;
    let close = next_update(&mut socket).await;
    let update = &close["data"]["attendanceUpdates"];
    assert_eq!(update["kind"], "CLOSE");
    assert_eq!(
        update["counts"],
        json!({"present": 0, "absent": 3, "permission": 1, "notYetScanned": 0})
    );
}

async fn an_excuse_and_its_revocation_reach_subscribers_as_edits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let session = app.open_session(&school).await;
    app.close_session(&school.teacher, &session).await;
    let (mut socket, _) = subscribe(&app.address, &school.teacher, &session).await;
    let today = app.today();
    let created = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($i: CreateExcuseInput!) { createExcuse(input: $i) { id } }",
            json!({"i": {"studentId": school.students[0], "from": today, "to": today,
                         "reason": "doctor", "courseId": school.course_id}}),
        )
        .await;
    let excused = next_update(&mut socket).await;
    let update = &excused["data"]["attendanceUpdates"];
    assert_eq!(update["kind"], "EDIT");
    assert_eq!(
        update["counts"],
        json!({"present": 0, "absent": 3, "permission": 1, "notYetScanned": 0})
    );
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { revokeExcuse(id: $id) { id } }",
        json!({"id": created["createExcuse"]["id"]}),
    )
    .await;
    let revoked = next_update(&mut socket).await;
    assert_eq!(
        revoked["data"]["attendanceUpdates"]["counts"],
        json!({"present": 0, "absent": 4, "permission": 0, "notYetScanned": 0})
    );
}

async fn a_missing_or_bad_token_closes_the_socket_without_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    for payload in [
        json!({}),
        json!({"Authorization": "Bearer garbage"}),
        json!({"Authorization": format!("Bearer {}", school.device_key)}),
    ] {
        let mut socket = ws_connect(&app.address, payload.clone()).await;
        let message = ws_next_message(&mut socket, Duration::from_secs(5)).await;
        assert!(
            message.is_none(),
            "{payload}: the socket should close, got {message:?}"
        );
    }
}

async fn only_the_sessions_teacher_and_admins_may_subscribe(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let session = app.open_session(&school).await;
    let (_, snapshot) = subscribe(&app.address, &school.admin, &session).await;
    assert_eq!(snapshot["data"]["attendanceUpdates"]["kind"], "SNAPSHOT");

    let mut socket = ws_connect(
        &app.address,
        json!({"Authorization": format!("Bearer {}", school.other_teacher)}),
    )
    .await;
    assert_eq!(
        ws_next_message(&mut socket, Duration::from_secs(5))
            .await
            .unwrap()["type"],
        "connection_ack"
    );
    socket
        .send(Message::text(
            json!({"id": "1", "type": "subscribe", "payload": {"query": UPDATES, "variables": {"id": session}}}).to_string(),
        ))
        .await
        .unwrap();
    let message = ws_next_message(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    // The resolver's error arrives as the subscription's only result: no data, NOT_FOUND.
    assert_eq!(message["type"], "next", "{message}");
    assert!(message["payload"]["data"].is_null(), "{message}");
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
    let end = ws_next_message(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(end["type"], "complete", "{end}");
}

async fn a_lagging_subscriber_is_told_to_resynchronise(backend: Backend) {
    use attendance::events::{EventKind, SessionEvent};
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let session = app.open_session(&school).await;
    let (mut socket, _) = subscribe(&app.address, &school.teacher, &session).await;
    // Far more events than a subscriber may buffer, faster than it can take them: publishing
    // never waits for the subscriber.
    let id: i32 = session.parse().unwrap();
    for _ in 0..5000 {
        app.service.events.publish(SessionEvent {
            session_id: id,
            kind: EventKind::Edit,
            record_id: None,
        });
    }
    let mut received = 0;
    loop {
        let update = next_update(&mut socket).await;
        received += 1;
        if update["data"]["attendanceUpdates"]["kind"] == "RESYNC" {
            break;
        }
        assert!(received < 5000, "never told to resynchronise");
    }
    assert!(
        received < 5000,
        "the subscriber's buffer is bounded: {received} updates before RESYNC"
    );
}

#[cfg(pg_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_through_one_process_reaches_a_subscriber_of_another_within_a_second() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let school = app.seed_school(100).await;
    let session = app.open_session(&school).await;
    // A second server process (the real binary) on the same PostgreSQL database, ready
    // once it listens for the other processes' events.
    let other = ServerCommand::with_test_env(&app.db.url)
        .ready_at("/ready")
        .start()
        .await;
    let (mut socket, _) = subscribe(&other.address, &school.teacher, &session).await;

    let today = app.today();
    let mut latencies = Vec::new();
    for student in &school.students {
        let sent = std::time::Instant::now();
        let (status, _) = app
            .scan(&school.device_key, student, &today, "08:00:00")
            .await;
        assert_eq!(status, 201);
        let update = next_update(&mut socket).await;
        latencies.push(sent.elapsed());
        assert_eq!(
            update["data"]["attendanceUpdates"]["kind"], "SCAN",
            "{update}"
        );
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "cross-process event latency over {} scans: median {median:?}, p99 {p99:?}, max {:?}",
        latencies.len(),
        latencies.last().unwrap()
    );
    assert!(latencies.len() >= 200);
    assert!(
        *latencies.last().unwrap() < Duration::from_secs(1),
        "an event took a second or more"
    );
}
