//! Closing sessions: auto-absent once, a constant number of statements, scans racing a
//! close, concurrent closes, and auto-close across app instances.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{CLOSE, CREATE};
use crate::both_databases;
use crate::common::*;

both_databases!(
    closing_marks_the_unscanned_absent_once,
    closing_runs_a_constant_number_of_statements,
    scans_racing_a_close_never_lose_an_acknowledged_scan,
    two_concurrent_closes_mark_each_student_once,
    two_app_instances_auto_close_each_session_once,
);

async fn closing_marks_the_unscanned_absent_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(3).await;
    let session_id = app.open_session(&school).await;
    for student in &school.students[..2] {
        let (status, _) = app.scan_today(&school, student, "08:00:00").await;
        assert_eq!(status, 201);
    }
    let closed = app
        .gql_ok(Some(&school.teacher), CLOSE, json!({"id": session_id}))
        .await;
    assert_eq!(closed["closeSession"]["markedAbsent"], 4);
    assert_eq!(closed["closeSession"]["session"]["isActive"], false);
    assert!(closed["closeSession"]["session"]["closedAt"].is_string());

    let again = app
        .gql_ok(Some(&school.admin), CLOSE, json!({"id": session_id}))
        .await;
    assert_eq!(again["closeSession"]["markedAbsent"], 0);

    let other = app
        .gql(
            Some(&school.other_teacher),
            CLOSE,
            json!({"id": session_id}),
        )
        .await;
    assert_eq!(error_code(&other), "NOT_FOUND");

    let records = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { records { status student { id } } } }",
            json!({"id": session_id}),
        )
        .await;
    let records = records["session"]["records"].as_array().unwrap().clone();
    assert_eq!(
        records.len(),
        6,
        "one record per enrolled student, none for the outsider"
    );
    let absent = records.iter().filter(|r| r["status"] == "ABSENT").count();
    let present = records.iter().filter(|r| r["status"] == "PRESENT").count();
    assert_eq!((present, absent), (2, 4));
}

async fn closing_runs_a_constant_number_of_statements(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let first = app.open_session(&school).await;
    let before = app.statements.get();
    let small = app
        .gql_ok(Some(&school.teacher), CLOSE, json!({"id": first}))
        .await;
    let small_count = app.statements.get() - before;
    assert_eq!(small["closeSession"]["markedAbsent"], 4);

    for n in 0..60 {
        app.service
            .create_student(
                &attendance::auth::Principal::System,
                attendance::service::directory::NewStudent {
                    student_code: format!("BULK{n}"),
                    first_name: "B".into(),
                    last_name: "B".into(),
                    section_id: school.sections[n % 2].parse().unwrap(),
                },
            )
            .await
            .unwrap();
    }
    let second = app.open_session(&school).await;
    let before = app.statements.get();
    let large = app
        .gql_ok(Some(&school.teacher), CLOSE, json!({"id": second}))
        .await;
    let large_count = app.statements.get() - before;
    assert_eq!(large["closeSession"]["markedAbsent"], 64);
    assert_eq!(
        small_count, large_count,
        "close statements grew with the roster"
    );
}

async fn scans_racing_a_close_never_lose_an_acknowledged_scan(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let school = Arc::new(app.seed_school(20).await);
    // Several rounds with the close sent at different moments, because one race lands
    // somewhere else each time.
    for delay_ms in [0, 1, 2, 4, 8] {
        race_scans_against_a_close(&app, &school, backend, delay_ms).await;
    }
    assert_eq!(
        app.service.metrics.lock_conflicts(),
        0,
        "scans and a close deadlocked (the database aborted one to break it)"
    );
}

async fn race_scans_against_a_close(
    app: &Arc<TestApp>,
    school: &Arc<School>,
    backend: Backend,
    delay_ms: u64,
) {
    let session_id = app.open_session(school).await;
    let today = app.today();
    let mut scans = Vec::new();
    for student in school.students.clone() {
        let (app, school, today) = (app.clone(), school.clone(), today.clone());
        scans.push(tokio::spawn(async move {
            let (status, body) = app
                .scan(&school.device_key, &student, &today, "08:00:00")
                .await;
            (student, status, body)
        }));
    }
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let closed = app
        .gql_ok(Some(&school.teacher), CLOSE, json!({"id": session_id}))
        .await;
    let marked = closed["closeSession"]["markedAbsent"].as_i64().unwrap();
    let mut acknowledged = Vec::new();
    for scan in scans {
        let (student, status, body) = scan.await.unwrap();
        match status {
            201 => acknowledged.push(student),
            409 => assert_eq!(body["error"]["code"], "SESSION_CLOSED", "{body}"),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let records = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { records { status studentId } } }",
            json!({"id": session_id}),
        )
        .await;
    let records = records["session"]["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), 40, "every student has exactly one record");
    let status_of: HashMap<String, String> = records
        .iter()
        .map(|r| {
            (
                r["studentId"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(status_of.len(), 40);
    for student in &acknowledged {
        assert_eq!(
            status_of[student], "PRESENT",
            "acknowledged scan of {student} lost"
        );
    }
    assert_eq!(acknowledged.len() as i64 + marked, 40);
    eprintln!(
        "close race on {backend:?}, close after {delay_ms} ms: {} acknowledged, {marked} marked absent",
        acknowledged.len()
    );
}

async fn two_concurrent_closes_mark_each_student_once(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let school = Arc::new(app.seed_school(15).await);
    let session_id = app.open_session(&school).await;
    let mut closes = Vec::new();
    for token in [
        school.teacher.clone(),
        school.admin.clone(),
        school.teacher.clone(),
    ] {
        let (app, session_id) = (app.clone(), session_id.clone());
        closes.push(tokio::spawn(async move {
            app.gql_ok(Some(&token), CLOSE, json!({"id": session_id}))
                .await
        }));
    }
    let mut marked = Vec::new();
    for close in closes {
        marked.push(
            close.await.unwrap()["closeSession"]["markedAbsent"]
                .as_i64()
                .unwrap(),
        );
    }
    marked.sort();
    assert_eq!(marked, vec![0, 0, 30]);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_record").await,
        30
    );
}

async fn two_app_instances_auto_close_each_session_once(backend: Backend) {
    let fast = |env: &mut HashMap<String, String>| {
        env.insert("AUTO_CLOSE_INTERVAL_SECONDS".into(), "1".into());
    };
    let first = TestApp::spawn_with(backend, fast).await;
    let second = first.spawn_sibling(fast).await;
    let school = first.seed_school(5).await;
    let mut sessions = Vec::new();
    for n in 0..3 {
        let code = format!("DEV-A{n}");
        first.register_device(&school.admin, &code).await;
        let data = first
            .gql_ok(
                Some(&school.teacher),
                CREATE,
                json!({"i": {"courseId": school.course_id, "deviceId": code}}),
            )
            .await;
        sessions.push(data["createSession"]["id"].as_str().unwrap().to_owned());
    }
    let today = first.today();
    let device_key = first.register_device(&school.admin, "DEV-SCAN").await.1;
    let _ = device_key;
    // Arrange: the sessions' end has passed (durations are whole minutes).
    first.count("SELECT COUNT(*) FROM attendance_session").await;
    sea_orm::ConnectionTrait::execute_unprepared(
        &first.service.db,
        "UPDATE attendance_session SET closes_at = created_at",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = first
            .count("SELECT COUNT(*) FROM attendance_session WHERE is_active")
            .await;
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions were not auto-closed in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &sessions {
        let absent = first
            .count(&format!("SELECT COUNT(*) FROM attendance_record WHERE session_id = {id} AND status = 'absent'"))
            .await;
        assert_eq!(absent, 10, "session {id}");
    }
    let _ = today;
    second.stop().await;
    first.stop().await;
}
