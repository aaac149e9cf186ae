//! The attendance flow: opening sessions, every scan outcome, closing with auto-absent,
//! edits with their audit trail, deletes, reads, and the concurrency cases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_teacher_opens_a_session_with_defaults,
    opening_a_session_fails_clearly,
    two_sessions_opened_at_once_on_one_device_yield_one,
    each_scan_outcome_has_its_status_and_reason,
    scan_times_are_read_in_the_school_time_zone,
    the_graphql_scan_follows_the_same_rules,
    sixty_four_identical_scans_yield_one_record,
    closing_marks_the_unscanned_absent_once,
    closing_runs_a_constant_number_of_statements,
    scans_racing_a_close_never_lose_an_acknowledged_scan,
    two_concurrent_closes_mark_each_student_once,
    two_app_instances_auto_close_each_session_once,
    teachers_edit_their_records_with_an_audit_trail,
    only_admins_delete_records,
    reads_respect_ownership_and_filters,
    a_session_page_of_500_records_runs_constant_statements,
    devices_last_contact_is_kept_without_a_write_per_scan,
);

async fn devices_last_contact_is_kept_without_a_write_per_scan(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(3).await;
    app.open_session(&school).await;
    let before = chrono::Utc::now();
    // The first scan also looks the device key up (then it is cached).
    let (status, _) = app
        .scan(
            &school.device_key,
            &school.students[0],
            &app.today(),
            "08:00:00",
        )
        .await;
    assert_eq!(status, 201);
    let statements = app.statements.get();
    for student in &school.students[1..] {
        let (status, _) = app
            .scan(&school.device_key, student, &app.today(), "08:00:00")
            .await;
        assert_eq!(status, 201);
    }
    let per_scan = (app.statements.get() - statements) as f64 / (school.students.len() - 1) as f64;
    // One statement per accepted scan (or fewer, when PostgreSQL batches them).
    assert!(
        per_scan > 0.0 && per_scan <= 1.0,
        "{per_scan} statements per scan: last contact must not add one"
    );
    // The background job flushes every few seconds; flush now instead of waiting for it.
    assert_eq!(app.service.flush_last_seen().await.unwrap(), 1);
    let data = app
        .gql_ok(
            Some(&school.admin),
            "{ devices { deviceId lastSeenAt } }",
            json!({}),
        )
        .await;
    let seen = data["devices"][0]["lastSeenAt"]
        .as_str()
        .expect("lastSeenAt is set");
    let seen = chrono::DateTime::parse_from_rfc3339(seen).unwrap();
    assert!(
        seen >= before - chrono::Duration::seconds(1),
        "{seen} < {before}"
    );
}

const CREATE: &str = "mutation($i: CreateSessionInput!) { createSession(input: $i) { id date isActive closesAt createdAt deviceId createdBy { id } course { id } } }";

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

async fn each_scan_outcome_has_its_status_and_reason(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        // A small limit, so an oversized body still fits the socket buffers and the client
        // reads the 413 instead of a reset while it is still writing.
        env.insert("MAX_BODY_BYTES".into(), "4096".into());
    })
    .await;
    let school = app.seed_school(2).await;
    let (_, idle_key) = app.register_device(&school.admin, "DEV-IDLE").await;
    let today = app.today();
    let key = school.device_key.as_str();

    let (status, body) = app.scan(key, &school.students[0], &today, "08:43:21").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("NO_ACTIVE_SESSION")),
        "{body}"
    );

    let session_id = app.open_session(&school).await;

    let (status, record) = app.scan(key, &school.students[0], &today, "08:43:21").await;
    assert_eq!(status, 201, "{record}");
    assert_eq!(record["status"], "present");
    assert_eq!(record["session_id"].to_string(), session_id);
    assert_eq!(record["student_id"].to_string(), school.students[0]);
    assert!(record["scanned_at"].as_str().unwrap().contains("08:43:21"));

    let (status, body) = app.scan(key, &school.students[0], &today, "08:44:00").await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "DUPLICATE_SCAN");
    assert_eq!(
        body["error"]["record_id"], record["id"],
        "the body names the existing record"
    );

    let (status, body) = app.scan(key, "987654", &today, "08:45:00").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("STUDENT_NOT_FOUND"))
    );

    let (status, body) = app.scan(key, &school.outsider, &today, "08:45:00").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("STUDENT_NOT_IN_COURSE"))
    );

    let (status, body) = app
        .scan(key, &school.students[1], "2001-01-01", "08:45:00")
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("DATE_MISMATCH"))
    );

    let (status, body) = app
        .scan(&idle_key, &school.students[1], &today, "08:45:00")
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("NO_ACTIVE_SESSION"))
    );

    let (status, body) = app.rest_scan(Some(key), "{\"student_id\": 1,").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("MALFORMED_JSON"))
    );
    let (status, body) = app
        .rest_scan(
            Some(key),
            &json!({"student_id": 1, "date": today, "time": "08:00:00", "device": "x"}).to_string(),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], "device");
    let (status, _) = app
        .rest_scan(
            Some(key),
            &json!({"student_id": 1, "date": today}).to_string(),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = app
        .rest_scan(
            Some(key),
            &json!({"student_id": 1, "date": today, "time": "25:00:00"}).to_string(),
        )
        .await;
    assert_eq!(status, 422);
    let huge = format!(
        "{{\"student_id\": 1, \"pad\": \"{}\"}}",
        "x".repeat(16 * 1024)
    );
    let (status, body) = app.rest_scan(Some(key), &huge).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("PAYLOAD_TOO_LARGE"))
    );
    let (status, _) = app.rest_scan(Some("attdev_wrong"), "{}").await;
    assert_eq!(status, 401);

    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { closeSession(id: $id) { markedAbsent } }",
        json!({"id": session_id}),
    )
    .await;
    let (status, body) = app.scan(key, &school.students[2], &today, "09:00:00").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("SESSION_CLOSED"))
    );

    let present = app
        .count("SELECT COUNT(*) FROM attendance_record WHERE status = 'present'")
        .await;
    assert_eq!(present, 1, "rejected scans changed nothing");
}

async fn scan_times_are_read_in_the_school_time_zone(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("TIME_ZONE".into(), "Africa/Addis_Ababa".into());
    })
    .await;
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    let today = app.today();
    let (status, record) = app
        .scan(&school.device_key, &school.students[0], &today, "08:43:21")
        .await;
    assert_eq!(status, 201, "{record}");
    let scanned =
        chrono::DateTime::parse_from_rfc3339(record["scanned_at"].as_str().unwrap()).unwrap();
    assert_eq!(scanned.to_utc().format("%H:%M:%S").to_string(), "05:43:21");
    assert_eq!(record["timestamp"], record["scanned_at"]);
}

async fn the_graphql_scan_follows_the_same_rules(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    let scan = "mutation($i: ScanInput!) { scan(input: $i) { id status scannedAt } }";
    let input =
        json!({"i": {"studentId": school.students[0], "date": app.today(), "time": "07:59:59"}});
    let data = app
        .gql_ok(Some(&school.device_key), scan, input.clone())
        .await;
    assert_eq!(data["scan"]["status"], "PRESENT");
    let dup = app.gql(Some(&school.device_key), scan, input).await;
    assert_eq!(error_code(&dup), "CONFLICT");
    assert_eq!(error_reason(&dup), "DUPLICATE_SCAN");
    assert_eq!(
        dup["errors"][0]["extensions"]["recordId"],
        data["scan"]["id"]
    );
    let outsider = app
        .gql(
            Some(&school.device_key),
            scan,
            json!({"i": {"studentId": school.outsider, "date": app.today(), "time": "08:00:00"}}),
        )
        .await;
    assert_eq!(error_reason(&outsider), "STUDENT_NOT_IN_COURSE");
    let bad_time = app
        .gql(
            Some(&school.device_key),
            scan,
            json!({"i": {"studentId": school.students[1], "date": app.today(), "time": "8am"}}),
        )
        .await;
    assert!(bad_time.get("errors").is_some());
}

async fn sixty_four_identical_scans_yield_one_record(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    let today = app.today();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let app = app.clone();
        let (key, student, today) = (
            school.device_key.clone(),
            school.students[0].clone(),
            today.clone(),
        );
        tasks.push(tokio::spawn(async move {
            app.scan(&key, &student, &today, "08:00:00").await
        }));
    }
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == 409 {
            assert_eq!(body["error"]["code"], "DUPLICATE_SCAN", "{body}");
        }
        assert!(!body.to_string().contains("locked"), "{body}");
        *statuses.entry(status).or_default() += 1;
    }
    eprintln!(
        "duplicate storm on {backend:?}: {statuses:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(statuses.get(&201), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get(&409), Some(&63), "{statuses:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, 1);
}

const CLOSE: &str = "mutation($id: ID!) { closeSession(id: $id) { markedAbsent session { id isActive closedAt } } }";

async fn closing_marks_the_unscanned_absent_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(3).await;
    let session_id = app.open_session(&school).await;
    let today = app.today();
    for student in &school.students[..2] {
        let (status, _) = app
            .scan(&school.device_key, student, &today, "08:00:00")
            .await;
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
            .create_student(attendance::service::directory::NewStudent {
                student_code: format!("BULK{n}"),
                first_name: "B".into(),
                last_name: "B".into(),
                section_id: school.sections[n % 2].parse().unwrap(),
            })
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

const EDIT: &str = "mutation($id: ID!, $s: AttendanceStatus!, $r: String) { editStatus(recordId: $id, status: $s, reason: $r) { id status timestamp scannedAt changes { oldStatus newStatus reason changedBy { username } changedAt } } }";

async fn teachers_edit_their_records_with_an_audit_trail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    let (_, record) = app
        .scan(
            &school.device_key,
            &school.students[0],
            &app.today(),
            "08:00:00",
        )
        .await;
    let record_id = record["id"].to_string();

    let edited = app
        .gql_ok(
            Some(&school.teacher),
            EDIT,
            json!({"id": record_id, "s": "PERMISSION", "r": "doctor's note"}),
        )
        .await;
    let edited = &edited["editStatus"];
    assert_eq!(edited["status"], "PERMISSION");
    let instant = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        instant(&edited["scannedAt"]),
        instant(&record["scanned_at"]),
        "scannedAt keeps the device time"
    );
    assert_ne!(
        edited["timestamp"], record["timestamp"],
        "timestamp becomes the edit time"
    );
    assert_eq!(edited["changes"][0]["oldStatus"], "PRESENT");
    assert_eq!(edited["changes"][0]["newStatus"], "PERMISSION");
    assert_eq!(edited["changes"][0]["reason"], "doctor's note");
    assert_eq!(edited["changes"][0]["changedBy"]["username"], "t001");

    let by_admin = app
        .gql_ok(
            Some(&school.admin),
            EDIT,
            json!({"id": record_id, "s": "ABSENT"}),
        )
        .await;
    assert_eq!(
        by_admin["editStatus"]["changes"].as_array().unwrap().len(),
        2
    );

    let foreign = app
        .gql(
            Some(&school.other_teacher),
            EDIT,
            json!({"id": record_id, "s": "PRESENT"}),
        )
        .await;
    let missing = app
        .gql(
            Some(&school.other_teacher),
            EDIT,
            json!({"id": "987654", "s": "PRESENT"}),
        )
        .await;
    assert_eq!(error_code(&foreign), "NOT_FOUND");
    assert_eq!(
        foreign["errors"][0]["message"],
        missing["errors"][0]["message"]
    );
    assert_eq!(
        foreign["errors"][0]["extensions"],
        missing["errors"][0]["extensions"]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM record_change").await, 2);
    let status = app
        .count("SELECT COUNT(*) FROM attendance_record WHERE status = 'absent'")
        .await;
    assert_eq!(status, 1, "the foreign edit changed nothing");
}

async fn only_admins_delete_records(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    let (_, record) = app
        .scan(
            &school.device_key,
            &school.students[0],
            &app.today(),
            "08:00:00",
        )
        .await;
    let id = record["id"].to_string();
    let delete = "mutation($id: ID!) { deleteAttendanceRecord(id: $id) }";
    let denied = app
        .gql(Some(&school.teacher), delete, json!({"id": id}))
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, 1);
    let done = app
        .gql_ok(Some(&school.admin), delete, json!({"id": id}))
        .await;
    assert_eq!(done["deleteAttendanceRecord"], true);
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, 0);
    let again = app
        .gql(Some(&school.admin), delete, json!({"id": id}))
        .await;
    assert_eq!(error_code(&again), "NOT_FOUND");
}

async fn reads_respect_ownership_and_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let mine = app.open_session(&school).await;
    let today = app.today();
    app.scan(&school.device_key, &school.students[0], &today, "08:00:00")
        .await;
    app.gql_ok(Some(&school.teacher), CLOSE, json!({"id": mine}))
        .await;
    let theirs = app
        .gql_ok(
            Some(&school.admin),
            CREATE,
            json!({"i": {"courseId": school.other_course_id, "deviceId": school.device_code, "teacherId": school.other_teacher_id}}),
        )
        .await["createSession"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let list = "query($c: ID, $a: Boolean, $f: Date, $t: Date) { sessions(courseId: $c, active: $a, from: $f, to: $t) { totalCount edges { node { id } } } }";
    let teacher_view = app.gql_ok(Some(&school.teacher), list, json!({})).await;
    assert_eq!(teacher_view["sessions"]["totalCount"], 1);
    assert_eq!(
        teacher_view["sessions"]["edges"][0]["node"]["id"],
        mine.as_str()
    );
    let admin_view = app.gql_ok(Some(&school.admin), list, json!({})).await;
    assert_eq!(admin_view["sessions"]["totalCount"], 2);
    let active = app
        .gql_ok(Some(&school.admin), list, json!({"a": true}))
        .await;
    assert_eq!(
        active["sessions"]["edges"][0]["node"]["id"],
        theirs.as_str()
    );
    let by_course = app
        .gql_ok(Some(&school.admin), list, json!({"c": school.course_id}))
        .await;
    assert_eq!(by_course["sessions"]["totalCount"], 1);
    let future = app
        .gql_ok(Some(&school.admin), list, json!({"f": "2999-01-01"}))
        .await;
    assert_eq!(future["sessions"]["totalCount"], 0);
    let today_only = app
        .gql_ok(Some(&school.admin), list, json!({"f": today, "t": today}))
        .await;
    assert_eq!(today_only["sessions"]["totalCount"], 2);

    let foreign = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { id } }",
            json!({"id": theirs}),
        )
        .await;
    assert!(foreign["session"].is_null());

    let records = "query($s: ID, $st: ID, $x: AttendanceStatus) { attendanceRecords(sessionId: $s, studentId: $st, status: $x) { totalCount edges { node { status student { studentCode } session { id } } } } }";
    let all = app.gql_ok(Some(&school.teacher), records, json!({})).await;
    assert_eq!(all["attendanceRecords"]["totalCount"], 4);
    let absent = app
        .gql_ok(Some(&school.teacher), records, json!({"x": "ABSENT"}))
        .await;
    assert_eq!(absent["attendanceRecords"]["totalCount"], 3);
    let one = app
        .gql_ok(
            Some(&school.teacher),
            records,
            json!({"st": school.students[0]}),
        )
        .await;
    assert_eq!(
        one["attendanceRecords"]["edges"][0]["node"]["status"],
        "PRESENT"
    );
    assert_eq!(
        one["attendanceRecords"]["edges"][0]["node"]["session"]["id"],
        mine.as_str()
    );
    let other_teacher = app
        .gql_ok(Some(&school.other_teacher), records, json!({}))
        .await;
    assert_eq!(other_teacher["attendanceRecords"]["totalCount"], 0);
    let nested = app
        .gql_ok(
            Some(&school.other_teacher),
            "query($id: ID!) { course(id: $id) { sessions { id records { id } } } }",
            json!({"id": school.course_id}),
        )
        .await;
    assert_eq!(
        nested["course"]["sessions"],
        json!([]),
        "nested paths hide other teachers' sessions"
    );
}

async fn a_session_page_of_500_records_runs_constant_statements(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let page = "query($id: ID!) { session(id: $id) { id course { code } records { id status lateMinutes student { studentCode firstName section { name } } changes { id } } } }";
    let small = app.open_session(&school).await;
    app.gql_ok(Some(&school.teacher), CLOSE, json!({"id": small}))
        .await;
    let before = app.statements.get();
    let data = app
        .gql_ok(Some(&school.teacher), page, json!({"id": small}))
        .await;
    let small_count = app.statements.get() - before;
    assert_eq!(data["session"]["records"].as_array().unwrap().len(), 4);

    for n in 0..496 {
        app.service
            .create_student(attendance::service::directory::NewStudent {
                student_code: format!("P{n:04}"),
                first_name: "P".into(),
                last_name: "P".into(),
                section_id: school.sections[n % 2].parse().unwrap(),
            })
            .await
            .unwrap();
    }
    let large = app.open_session(&school).await;
    app.gql_ok(Some(&school.teacher), CLOSE, json!({"id": large}))
        .await;
    let before = app.statements.get();
    let data = app
        .gql_ok(Some(&school.teacher), page, json!({"id": large}))
        .await;
    let large_count = app.statements.get() - before;
    assert_eq!(data["session"]["records"].as_array().unwrap().len(), 500);
    assert_eq!(small_count, large_count);
    eprintln!("session page on {backend:?}: {large_count} statements for 500 records");
}
