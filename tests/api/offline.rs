//! Offline devices: buffered batches matched to the session of their own time, replays,
//! corrected absences and the offline horizon.

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_batch_answers_per_item_and_replays_change_nothing,
    a_buffered_scan_corrects_an_automatic_absence_but_never_a_teacher_edit,
    a_buffered_scan_turns_an_excused_absence_into_presence,
    a_buffered_scan_goes_to_the_session_bound_at_its_time,
    scans_past_the_offline_horizon_are_rejected,
    oversized_and_malformed_batches_are_refused_whole,
    a_full_batch_of_1000_scans_is_taken_in_one_request,
    offline_batches_racing_a_close_never_deadlock,
);

/// Batches that list students from the highest id down race a close, which marks absentees
/// from the lowest id up: inserted in request order they would lock the same records in
/// opposite orders, and PostgreSQL would abort one side (a 503 for the device).
async fn offline_batches_racing_a_close_never_deadlock(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let school = std::sync::Arc::new(app.seed_school(20).await);
    let mut students: Vec<i64> = school.students.iter().map(|s| s.parse().unwrap()).collect();
    students.sort_unstable_by(|a, b| b.cmp(a));
    for delay_ms in [0u64, 1, 2, 4, 8] {
        let session = app
            .open_session_from_midnight(&school, &school.device_code)
            .await;
        let (today, now) = (app.today(), app.now_time());
        let scans = Value::Array(
            students
                .iter()
                .map(|id| json!({"student_id": id, "date": today, "time": now}))
                .collect(),
        );
        let mut batches = Vec::new();
        for _ in 0..3 {
            let (app, school, scans) = (app.clone(), school.clone(), scans.clone());
            batches.push(tokio::spawn(async move {
                app.scan_batch(&school.device_key, &scans).await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        let marked = app.close_session(&school.teacher, &session).await;
        for batch in batches {
            let (status, body) = batch.await.unwrap();
            assert_eq!(status, 200, "close after {delay_ms} ms: {body}");
            for result in body["results"].as_array().unwrap() {
                assert!(
                    matches!(result["status"].as_str(), Some("accepted" | "duplicate")),
                    "{result}"
                );
            }
        }
        // Every scan was made before the close, so whichever side won, each student ends
        // present, once: a scan landing after the close corrects its automatic absence.
        let records = app
            .gql_ok(
                Some(&school.teacher),
                "query($id: ID!) { session(id: $id) { records { status } } }",
                json!({"id": session}),
            )
            .await;
        let records = records["session"]["records"].as_array().unwrap();
        assert_eq!(records.len(), students.len());
        assert!(
            records.iter().all(|r| r["status"] == "PRESENT"),
            "close after {delay_ms} ms: {records:?}"
        );
        eprintln!(
            "offline race on {backend:?}, close after {delay_ms} ms: {marked} marked absent first"
        );
    }
}

async fn a_full_batch_of_1000_scans_is_taken_in_one_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.service.db,
        &format!(
            "INSERT INTO student (student_code, first_name, last_name, section_id, created_at, enrolled_at) \
             SELECT 'B' || n, 'B', 'B', {}, created_at, enrolled_at FROM student, \
             (SELECT 1000 + a.i * 100 + b.i * 10 + c.i AS n FROM \
               (SELECT 0 AS i UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a, \
               (SELECT 0 AS i UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) b, \
               (SELECT 0 AS i UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) c) g \
             WHERE student.id = {}",
            school.sections[0], school.students[0]
        ),
    )
    .await
    .unwrap();
    app.open_session_from_midnight(&school, &school.device_code)
        .await;
    let ids = app
        .ids("SELECT id FROM student WHERE student_code LIKE 'B%' ORDER BY id")
        .await;
    assert_eq!(ids.len(), 1000);
    let (today, now) = (app.today(), app.now_time());
    let scans: Vec<Value> = ids
        .iter()
        .map(|id| json!({"student_id": id, "date": today, "time": now}))
        .collect();
    let started = std::time::Instant::now();
    let (status, body) = app
        .scan_batch(&school.device_key, &Value::Array(scans))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 1000, "{}", body["results"][0]);
    eprintln!(
        "batch of 1000 buffered scans on {backend:?}: {elapsed:?} ({:.0} scans/s, debug build)",
        1000.0 / elapsed.as_secs_f64()
    );
}

fn statuses(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r["status"].as_str().unwrap() {
            "rejected" => format!("rejected:{}", r["code"].as_str().unwrap()),
            other => other.to_owned(),
        })
        .collect()
}

async fn a_batch_answers_per_item_and_replays_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(3).await;
    app.open_session_from_midnight(&school, &school.device_code)
        .await;
    let (today, now) = (app.today(), app.now_time());
    let scans = json!([
        {"student_id": school.students[0].parse::<i64>().unwrap(), "date": today, "time": now},
        {"student_id": school.students[1].parse::<i64>().unwrap(), "date": today, "time": now},
        {"student_id": school.students[0].parse::<i64>().unwrap(), "date": today, "time": now},
        {"student_id": 987654, "date": today, "time": now},
        {"student_id": school.outsider.parse::<i64>().unwrap(), "date": today, "time": now},
        {"student_id": school.students[2].parse::<i64>().unwrap(), "date": today},
        {"student_id": school.students[2].parse::<i64>().unwrap(), "date": "2001-01-01", "time": "08:00:00"},
    ]);
    let (status, first) = app.scan_batch(&school.device_key, &scans).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        statuses(&first),
        [
            "accepted",
            "accepted",
            "duplicate",
            "rejected:STUDENT_NOT_FOUND",
            "rejected:STUDENT_NOT_IN_COURSE",
            "rejected:BAD_USER_INPUT",
            "rejected:SCAN_TOO_OLD",
        ]
    );
    assert_eq!(first["accepted"], 2);
    assert_eq!(first["results"][5]["field"], "time");
    let records_after_first = app.count("SELECT COUNT(*) FROM attendance_record").await;

    let (status, replay) = app.scan_batch(&school.device_key, &scans).await;
    assert_eq!(status, 200);
    assert_eq!(replay["accepted"], 0);
    assert_eq!(replay["duplicates"], 3);
    assert_eq!(
        replay["results"][0]["record_id"],
        first["results"][0]["record"]["id"]
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_record").await,
        records_after_first
    );

    let wrapped = json!({"scans": [{"student_id": school.students[2].parse::<i64>().unwrap(), "date": today, "time": now}]});
    let (status, body) = app.scan_batch(&school.device_key, &wrapped).await;
    assert_eq!(
        (status, statuses(&body)),
        (200, vec!["accepted".to_owned()])
    );
}

async fn a_buffered_scan_corrects_an_automatic_absence_but_never_a_teacher_edit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let session = app
        .open_session_from_midnight(&school, &school.device_code)
        .await;
    let (today, scan_time) = (app.today(), app.now_time());
    assert_eq!(app.close_session(&school.teacher, &session).await, 4);

    // The teacher excuses one absent student before the buffered scans arrive.
    let records = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { records { id studentId } } }",
            json!({"id": session}),
        )
        .await;
    let excused = student_record(&records["session"], &school.students[1]);
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PERMISSION, reason: \"note\") { id } }",
        json!({"id": excused["id"]}),
    )
    .await;

    let scans = json!([
        {"student_id": school.students[0].parse::<i64>().unwrap(), "date": today, "time": scan_time},
        {"student_id": school.students[1].parse::<i64>().unwrap(), "date": today, "time": scan_time},
    ]);
    let (status, body) = app.scan_batch(&school.device_key, &scans).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(statuses(&body), ["accepted", "duplicate"]);
    assert_eq!(body["results"][0]["corrected_absence"], true);
    assert_eq!(body["results"][0]["record"]["status"], "present");

    let history = "query($id: ID!) { session(id: $id) { records { studentId status scannedAt changes { oldStatus newStatus reason changedBy { username } } } } }";
    let data = app
        .gql_ok(Some(&school.teacher), history, json!({"id": session}))
        .await;
    let corrected = student_record(&data["session"], &school.students[0]);
    assert_eq!(corrected["status"], "PRESENT");
    assert!(corrected["scannedAt"].is_string());
    assert_eq!(corrected["changes"][0]["oldStatus"], "ABSENT");
    assert_eq!(corrected["changes"][0]["newStatus"], "PRESENT");
    assert!(corrected["changes"][0]["changedBy"].is_null());
    assert!(
        corrected["changes"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("buffered scan")
    );
    let edited = student_record(&data["session"], &school.students[1]);
    assert_eq!(
        edited["status"], "PERMISSION",
        "a teacher's edit is never overwritten"
    );
    assert_eq!(edited["changes"].as_array().unwrap().len(), 1);

    let (_, replay) = app.scan_batch(&school.device_key, &scans).await;
    assert_eq!(statuses(&replay), ["duplicate", "duplicate"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM record_change").await, 2);
}

async fn a_buffered_scan_goes_to_the_session_bound_at_its_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let first = app
        .open_session_from_midnight(&school, &school.device_code)
        .await;
    let (today, during_first) = (app.today(), app.now_time());
    app.close_session(&school.teacher, &first).await;
    // The device now serves another course; the buffered scan still belongs to the first.
    app.create_session(
        &school.admin,
        json!({"courseId": school.other_course_id, "deviceId": school.device_code,
               "teacherId": school.other_teacher_id}),
    )
    .await;
    let scans = json!([{"student_id": school.students[0].parse::<i64>().unwrap(), "date": today, "time": during_first}]);
    let (_, body) = app.scan_batch(&school.device_key, &scans).await;
    assert_eq!(statuses(&body), ["accepted"], "{body}");
    assert_eq!(
        body["results"][0]["record"]["session_id"].to_string(),
        first
    );
}

async fn scans_past_the_offline_horizon_are_rejected(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("OFFLINE_SCAN_HORIZON_HOURS".into(), "1".into());
    })
    .await;
    let school = app.seed_school(1).await;
    let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    let scans = json!([{"student_id": school.students[0].parse::<i64>().unwrap(),
        "date": two_hours_ago.format("%Y-%m-%d").to_string(), "time": two_hours_ago.format("%H:%M:%S").to_string()}]);
    let (status, body) = app.scan_batch(&school.device_key, &scans).await;
    assert_eq!(status, 200);
    assert_eq!(statuses(&body), ["rejected:SCAN_TOO_OLD"]);
}

async fn oversized_and_malformed_batches_are_refused_whole(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"student_id": 1, "date": "2026-01-01", "time": "08:00:00"}))
        .collect();
    let (status, body) = app
        .scan_batch(&school.device_key, &Value::Array(many))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], "scans");
    let res = app
        .client
        .post(format!("{}/api/attendance/scans/batch", app.address))
        .bearer_auth(&school.device_key)
        .body("[{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let (status, _) = app.scan_batch(&school.admin, &json!([])).await;
    assert_eq!(status, 403, "people's tokens do not submit scans");
}

async fn a_buffered_scan_turns_an_excused_absence_into_presence(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let (early, late) = (&school.students[0], &school.students[1]);
    let excuse = |student: &str| {
        json!({"i": {"studentId": student, "courseId": school.course_id, "from": app.today(),
                     "to": app.today(), "reason": "dentist"}})
    };
    let create = "mutation($i: CreateExcuseInput!) { createExcuse(input: $i) { id } }";
    // One excuse known before the close (it writes PERMISSION), one made after it (it turns
    // the automatic absence into PERMISSION).
    app.gql_ok(Some(&school.teacher), create, excuse(early))
        .await;
    let session = app
        .open_session_from_midnight(&school, &school.device_code)
        .await;
    let (today, scan_time) = (app.today(), app.now_time());
    app.close_session(&school.teacher, &session).await;
    let after = app
        .gql_ok(Some(&school.teacher), create, excuse(late))
        .await;

    // The terminal was offline: its scans of both arrive now, from during the class.
    let scans = json!([
        {"student_id": early.parse::<i64>().unwrap(), "date": today, "time": scan_time},
        {"student_id": late.parse::<i64>().unwrap(), "date": today, "time": scan_time},
    ]);
    let (status, body) = app.scan_batch(&school.device_key, &scans).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(statuses(&body), ["accepted", "accepted"], "{body}");
    for result in body["results"].as_array().unwrap() {
        assert_eq!(result["corrected_absence"], true, "{result}");
        assert_eq!(result["record"]["status"], "present");
    }
    let history = "query($id: ID!) { session(id: $id) { records { studentId status \
                   changes { kind oldStatus newStatus } } } }";
    let data = app
        .gql_ok(Some(&school.teacher), history, json!({"id": session}))
        .await;
    for student in [early, late] {
        assert_eq!(
            student_record(&data["session"], student)["changes"],
            json!([
                {"kind": "EXCUSE", "oldStatus": "ABSENT", "newStatus": "PERMISSION"},
                {"kind": "EDIT", "oldStatus": "PERMISSION", "newStatus": "PRESENT"},
            ]),
            "{data}"
        );
    }
    // Revoking the excuse leaves the presence the scan proved.
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { revokeExcuse(id: $id) { id } }",
        json!({"id": after["createExcuse"]["id"]}),
    )
    .await;
    let data = app
        .gql_ok(Some(&school.teacher), history, json!({"id": session}))
        .await;
    assert_eq!(
        student_record(&data["session"], late)["status"],
        "PRESENT",
        "{data}"
    );
    assert_eq!(
        student_record(&data["session"], late)["changes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
