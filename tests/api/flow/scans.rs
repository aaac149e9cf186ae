//! Scans: every outcome with its status and reason, the school time zone, the GraphQL scan,
//! identical scans, and the device's last contact.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::both_databases;
use crate::common::*;

both_databases!(
    each_scan_outcome_has_its_status_and_reason,
    scan_times_are_read_in_the_school_time_zone,
    the_graphql_scan_follows_the_same_rules,
    sixty_four_identical_scans_yield_one_record,
    devices_last_contact_is_kept_without_a_write_per_scan,
);

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

    app.close_session(&school.teacher, &session_id).await;
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
    let (status, record) = app
        .scan_today(&school, &school.students[0], "08:43:21")
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

async fn devices_last_contact_is_kept_without_a_write_per_scan(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(3).await;
    app.open_session(&school).await;
    let before = chrono::Utc::now();
    // The first scan also looks the device key up (then it is cached).
    let (status, _) = app
        .scan_today(&school, &school.students[0], "08:00:00")
        .await;
    assert_eq!(status, 201);
    let statements = app.statements.get();
    for student in &school.students[1..] {
        let (status, _) = app.scan_today(&school, student, "08:00:00").await;
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
