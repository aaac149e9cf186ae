//! Opening sessions: defaults, the ways opening fails, and two opens at once on one device.

use std::sync::Arc;

use serde_json::{Value, json};

use super::CREATE;
use crate::both_databases;
use crate::common::*;

both_databases!(
    a_teacher_opens_a_session_with_defaults,
    opening_a_session_fails_clearly,
    two_sessions_opened_at_once_on_one_device_yield_one,
);

async fn a_teacher_opens_a_session_with_defaults(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("SESSION_DURATION_MINUTES".into(), "45".into());
    })
    .await;
    let school = app.seed_school(1).await;
    let data = app
        .gql_ok(
            Some(&school.teacher),
            CREATE,
            json!({"i": {"courseId": school.course_id, "deviceId": school.device_code}}),
        )
        .await;
    let session = &data["createSession"];
    assert_eq!(session["date"], app.today());
    assert_eq!(session["isActive"], true);
    assert_eq!(session["deviceId"], "DEV-01");
    assert_eq!(session["createdBy"]["id"], school.teacher_id.as_str());
    let created =
        chrono::DateTime::parse_from_rfc3339(session["createdAt"].as_str().unwrap()).unwrap();
    let closes =
        chrono::DateTime::parse_from_rfc3339(session["closesAt"].as_str().unwrap()).unwrap();
    assert_eq!((closes - created).num_minutes(), 45);

    // durationMinutes sets closesAt; a future date is allowed.
    let (_, key2) = app.register_device(&school.admin, "DEV-02").await;
    let _ = key2;
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Duration::days(1)).to_string();
    let data = app
        .gql_ok(
            Some(&school.teacher),
            CREATE,
            json!({"i": {"courseId": school.course_id, "deviceId": "DEV-02", "date": tomorrow, "durationMinutes": 10}}),
        )
        .await;
    let session = &data["createSession"];
    assert_eq!(session["date"], tomorrow.as_str());
    let created =
        chrono::DateTime::parse_from_rfc3339(session["createdAt"].as_str().unwrap()).unwrap();
    let closes =
        chrono::DateTime::parse_from_rfc3339(session["closesAt"].as_str().unwrap()).unwrap();
    assert_eq!((closes - created).num_minutes(), 10);
}

async fn opening_a_session_fails_clearly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let open = |token: String, input: Value| {
        let app = &app;
        async move { app.gql(Some(&token), CREATE, json!({"i": input})).await }
    };
    let unknown = open(
        school.teacher.clone(),
        json!({"courseId": school.course_id, "deviceId": "NOPE"}),
    )
    .await;
    assert_eq!(error_code(&unknown), "NOT_FOUND");

    let yesterday = (chrono::Utc::now().date_naive() - chrono::Duration::days(1)).to_string();
    let past = open(
        school.teacher.clone(),
        json!({"courseId": school.course_id, "deviceId": school.device_code, "date": yesterday}),
    )
    .await;
    assert_eq!(error_code(&past), "BAD_USER_INPUT");
    assert_eq!(past["errors"][0]["extensions"]["field"], "date");

    let not_theirs = open(
        school.other_teacher.clone(),
        json!({"courseId": school.course_id, "deviceId": school.device_code}),
    )
    .await;
    assert_eq!(error_code(&not_theirs), "FORBIDDEN");

    let bad_duration = open(
        school.teacher.clone(),
        json!({"courseId": school.course_id, "deviceId": school.device_code, "durationMinutes": 0}),
    )
    .await;
    assert_eq!(error_code(&bad_duration), "BAD_USER_INPUT");

    // An admin opens for any course, naming the teacher.
    let by_admin = app
        .gql_ok(
            Some(&school.admin),
            CREATE,
            json!({"i": {"courseId": school.other_course_id, "deviceId": school.device_code, "teacherId": school.other_teacher_id}}),
        )
        .await;
    assert_eq!(
        by_admin["createSession"]["createdBy"]["id"],
        school.other_teacher_id.as_str()
    );

    let busy = open(
        school.teacher.clone(),
        json!({"courseId": school.course_id, "deviceId": school.device_code}),
    )
    .await;
    assert_eq!(error_code(&busy), "CONFLICT");
    assert_eq!(error_reason(&busy), "DEVICE_BUSY");

    let (revoked_id, _) = app.register_device(&school.admin, "DEV-OLD").await;
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!) { revokeDevice(id: $id) { id } }",
        json!({"id": revoked_id}),
    )
    .await;
    let revoked = open(
        school.teacher.clone(),
        json!({"courseId": school.course_id, "deviceId": "DEV-OLD"}),
    )
    .await;
    assert_eq!(error_code(&revoked), "NOT_FOUND");

    let sessions = app.count("SELECT COUNT(*) FROM attendance_session").await;
    assert_eq!(sessions, 1, "failed opens changed nothing");
}

async fn two_sessions_opened_at_once_on_one_device_yield_one(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let school = Arc::new(app.seed_school(1).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (app, school) = (app.clone(), school.clone());
        tasks.push(tokio::spawn(async move {
            let (token, course, teacher) = if i % 2 == 0 {
                (&school.admin, &school.course_id, &school.teacher_id)
            } else {
                (&school.admin, &school.other_course_id, &school.other_teacher_id)
            };
            app.gql(
                Some(token),
                CREATE,
                json!({"i": {"courseId": course, "deviceId": school.device_code, "teacherId": teacher}}),
            )
            .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let body = task.await.unwrap();
        if body.get("errors").is_none() {
            ok += 1;
        } else {
            assert_eq!(error_reason(&body), "DEVICE_BUSY", "{body}");
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_session WHERE is_active")
            .await,
        1
    );
}
