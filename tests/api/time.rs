//! Lateness, daylight-saving changes and midnight: sessions and scans land on the right local
//! date and instant.

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    present_records_carry_late_minutes_after_the_grace_period,
    scans_around_berlin_daylight_saving_changes_land_on_the_right_instant,
    a_session_and_its_scans_use_the_local_date_across_midnight,
    closing_marks_only_students_enrolled_when_the_session_started,
);

async fn closing_marks_only_students_enrolled_when_the_session_started(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let session = app.open_session(&school).await;
    // Joins the course's section after the session opened: not expected at this class.
    let late_joiner = app
        .create_student(&school.admin, "LATE01", &school.sections[0])
        .await;
    // Moves into the course from another section after the start: not expected either.
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!, $s: ID!) { updateStudent(id: $id, input: {sectionId: $s}) { id } }",
        json!({"id": school.outsider, "s": school.sections[1]}),
    )
    .await;
    assert_eq!(app.close_session(&school.teacher, &session).await, 4);
    for student in [&late_joiner, &school.outsider] {
        let records = app
            .count(&format!(
                "SELECT COUNT(*) FROM attendance_record WHERE student_id = {student}"
            ))
            .await;
        assert_eq!(records, 0, "student {student} joined after the start");
    }
    // A student who joins after the close is untouched too, and the next session counts them.
    let after_close = app
        .create_student(&school.admin, "LATE02", &school.sections[1])
        .await;
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM attendance_record WHERE student_id = {after_close}"
        ))
        .await,
        0
    );
    let next = app.open_session(&school).await;
    assert_eq!(app.close_session(&school.teacher, &next).await, 7);
}

async fn present_records_carry_late_minutes_after_the_grace_period(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let data = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($i: CreateSessionInput!) { createSession(input: $i) { id startsAt graceMinutes } }",
            json!({"i": {"courseId": school.course_id, "deviceId": school.device_code, "startTime": "08:00:00", "graceMinutes": 10}}),
        )
        .await;
    assert_eq!(data["createSession"]["graceMinutes"], 10);
    let cases = [
        ("07:55:00", 0),
        ("08:10:00", 0),
        ("08:10:59", 10),
        ("08:25:30", 25),
    ];
    for (student, (time, late)) in school.students.iter().zip(cases) {
        let (status, record) = app.scan_today(&school, student, time).await;
        assert_eq!(status, 201, "{record}");
        assert_eq!(record["late_minutes"], late, "scan at {time}");
    }
    let page = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { records { lateMinutes status } } }",
            json!({"id": data["createSession"]["id"]}),
        )
        .await;
    let lates: Vec<i64> = page["session"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lateMinutes"].as_i64().unwrap())
        .collect();
    assert_eq!(lates, [0, 0, 10, 25]);
}

/// Arranges a closed session of `date` (UTC bounds given) on the school's device.
async fn past_session(app: &TestApp, school: &School, date: &str, from: &str, to: &str) {
    let sql = format!(
        "INSERT INTO attendance_session (course_id, date, created_by, created_at, device_id, is_active, starts_at, grace_minutes, closes_at, closed_at) \
         VALUES ({course}, '{date}', {teacher}, '{from}', {device}, false, '{from}', 0, '{to}', '{to}')",
        course = school.course_id,
        teacher = school.teacher_id,
        device = school.device_row_id,
    );
    sea_orm::ConnectionTrait::execute_unprepared(&app.service.db, &sql)
        .await
        .unwrap();
}

async fn batch(app: &TestApp, key: &str, scans: Value) -> Value {
    let res = app
        .client
        .post(format!("{}/api/attendance/scans/batch", app.address))
        .bearer_auth(key)
        .json(&scans)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.unwrap()
}

fn instant(value: &Value) -> String {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .to_utc()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn scans_around_berlin_daylight_saving_changes_land_on_the_right_instant(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("TIME_ZONE".into(), "Europe/Berlin".into());
        env.insert("OFFLINE_SCAN_HORIZON_HOURS".into(), "100000".into());
    })
    .await;
    let school = app.seed_school(2).await;
    let id = |i: usize| school.students[i].parse::<i64>().unwrap();
    // Spring forward: 2026-03-29 02:00 CET becomes 03:00 CEST.
    past_session(
        &app,
        &school,
        "2026-03-29",
        "2026-03-28T23:00:00+00:00",
        "2026-03-29T12:00:00+00:00",
    )
    .await;
    let spring = batch(
        &app,
        &school.device_key,
        json!([
            {"student_id": id(0), "date": "2026-03-29", "time": "01:59:59"},
            {"student_id": id(1), "date": "2026-03-29", "time": "02:30:00"},
            {"student_id": id(2), "date": "2026-03-29", "time": "03:00:00"},
        ]),
    )
    .await;
    assert_eq!(
        instant(&spring["results"][0]["record"]["scanned_at"]),
        "2026-03-29T00:59:59Z"
    );
    assert_eq!(
        spring["results"][1]["status"], "rejected",
        "02:30 does not exist that night"
    );
    assert_eq!(spring["results"][1]["field"], "time");
    assert_eq!(
        instant(&spring["results"][2]["record"]["scanned_at"]),
        "2026-03-29T01:00:00Z"
    );

    // Fall back: 2026-10-25 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    past_session(
        &app,
        &school,
        "2026-10-25",
        "2026-10-24T22:00:00+00:00",
        "2026-10-25T12:00:00+00:00",
    )
    .await;
    let autumn = batch(
        &app,
        &school.device_key,
        json!([
            {"student_id": id(0), "date": "2026-10-25", "time": "02:30:00"},
            {"student_id": id(1), "date": "2026-10-25", "time": "03:30:00"},
        ]),
    )
    .await;
    assert_eq!(
        instant(&autumn["results"][0]["record"]["scanned_at"]),
        "2026-10-25T00:30:00Z",
        "the earlier 02:30"
    );
    assert_eq!(
        instant(&autumn["results"][1]["record"]["scanned_at"]),
        "2026-10-25T02:30:00Z"
    );
}

async fn a_session_and_its_scans_use_the_local_date_across_midnight(backend: Backend) {
    // UTC+14: the local date is ahead of the UTC date for ten hours of every day.
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("TIME_ZONE".into(), "Pacific/Kiritimati".into());
    })
    .await;
    let school = app.seed_school(1).await;
    let local_today = (chrono::Utc::now() + chrono::Duration::hours(14)).date_naive();
    let data = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($i: CreateSessionInput!) { createSession(input: $i) { id date } }",
            json!({"i": {"courseId": school.course_id, "deviceId": school.device_code}}),
        )
        .await;
    assert_eq!(data["createSession"]["date"], local_today.to_string());
    let (status, record) = app
        .scan(
            &school.device_key,
            &school.students[0],
            &local_today.to_string(),
            "00:30:00",
        )
        .await;
    assert_eq!(status, 201, "{record}");
    let expected = format!("{}T10:30:00Z", local_today.pred_opt().unwrap());
    assert_eq!(
        instant(&record["scanned_at"]),
        expected,
        "00:30 at UTC+14 is 10:30 UTC the day before"
    );
    // The UTC date of that instant is not the session's date.
    let previous_day = local_today.pred_opt().unwrap().to_string();
    let (status, body) = app
        .scan(
            &school.device_key,
            &school.students[1],
            &previous_day,
            "23:30:00",
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("DATE_MISMATCH"))
    );
}
