//! Attendance records: edits with their audit trail, deletes, reads under ownership and
//! filters, and the session page.

use serde_json::{Value, json};

use super::{CLOSE, CREATE};
use crate::both_databases;
use crate::common::*;

both_databases!(
    teachers_edit_their_records_with_an_audit_trail,
    only_admins_delete_records,
    reads_respect_ownership_and_filters,
    a_session_page_of_500_records_runs_constant_statements,
    record_and_session_pages_join_their_students_in_constant_statements,
    the_http_page_answers_what_the_engine_answers,
);

const EDIT: &str = "mutation($id: ID!, $s: AttendanceStatus!, $r: String) { editStatus(recordId: $id, status: $s, reason: $r) { id status timestamp scannedAt changes { oldStatus newStatus reason changedBy { username } changedAt } } }";

async fn teachers_edit_their_records_with_an_audit_trail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    let (_, record) = app
        .scan_today(&school, &school.students[0], "08:00:00")
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
        .scan_today(&school, &school.students[0], "08:00:00")
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
    app.scan_today(&school, &school.students[0], "08:00:00")
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
            .create_student(
                &attendance::auth::Principal::System,
                attendance::service::directory::NewStudent {
                    student_code: format!("P{n:04}"),
                    first_name: "P".into(),
                    last_name: "P".into(),
                    section_id: school.sections[n % 2].parse().unwrap(),
                },
            )
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

async fn record_and_session_pages_join_their_students_in_constant_statements(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let records = "{ attendanceRecords(first: 100) { totalCount edges { cursor node { id studentId status student { id studentCode firstName } session { id } } } } }";
    let sessions = "{ sessions(first: 50) { edges { node { id isActive counts { present absent } records { id studentId student { id studentCode } } } } } }";
    let report = "query($id: ID!) { courseReport(courseId: $id) { sessions students { student { id studentCode } present absent rate } } }";
    close_one(&app, &school).await;
    let (small_records, _) = count(&app, &school, records).await;
    let (small_sessions, _) = count(&app, &school, sessions).await;
    let (small_report, _) = count(&app, &school, report).await;

    for n in 0..60 {
        app.service
            .create_student(
                &attendance::auth::Principal::System,
                attendance::service::directory::NewStudent {
                    student_code: format!("J{n:04}"),
                    first_name: format!("J{n}"),
                    last_name: "J".into(),
                    section_id: school.sections[n % 2].parse().unwrap(),
                },
            )
            .await
            .unwrap();
    }
    close_one(&app, &school).await;
    close_one(&app, &school).await;
    let (large_records, data) = count(&app, &school, records).await;
    let page = &data["attendanceRecords"];
    assert_eq!(page["totalCount"], 4 + 64 + 64);
    let edges = page["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 100);
    for edge in edges {
        let node = &edge["node"];
        assert_eq!(
            node["student"]["id"], node["studentId"],
            "each record shows its own student"
        );
    }
    let (large_sessions, data) = count(&app, &school, sessions).await;
    let listed = data["sessions"]["edges"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    for session in listed {
        for record in session["node"]["records"].as_array().unwrap() {
            assert_eq!(record["student"]["id"], record["studentId"]);
        }
    }
    let (large_report, data) = count(&app, &school, report).await;
    assert_eq!(
        data["courseReport"]["students"].as_array().unwrap().len(),
        64
    );
    assert_eq!(data["courseReport"]["sessions"], 3);

    assert_eq!(small_records, large_records, "attendanceRecords");
    assert_eq!(small_sessions, large_sessions, "sessions");
    assert_eq!(small_report, large_report, "courseReport");
    eprintln!(
        "on {backend:?}: attendanceRecords {large_records}, sessions {large_sessions}, courseReport {large_report} statements"
    );
}

/// Opens a session, scans the first student and closes it; returns the session's id.
async fn close_one(app: &TestApp, school: &School) -> String {
    let session = app.open_session(school).await;
    app.scan_today(school, &school.students[0], "08:00:00")
        .await;
    app.gql_ok(Some(&school.teacher), CLOSE, json!({"id": session}))
        .await;
    session
}

/// The statements one teacher's read runs, with its data.
async fn count(app: &TestApp, school: &School, query: &str) -> (u64, Value) {
    let before = app.statements.get();
    let data = app
        .gql_ok(
            Some(&school.teacher),
            query,
            json!({"id": school.course_id}),
        )
        .await;
    (app.statements.get() - before, data)
}

/// Over HTTP a page's plain lists are written straight to JSON; a document that repeats a
/// response key takes the engine's own path instead. Both answer the same records.
async fn the_http_page_answers_what_the_engine_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let session = close_one(&app, &school).await;
    let selection = "records { __typename id status timestamp scannedAt lateMinutes who: student { id studentCode firstName lastName } ...R }";
    let fragment = "fragment R on AttendanceRecord { sessionId }";
    let written = format!("query($id: ID!) {{ session(id: $id) {{ id {selection} }} }} {fragment}");
    let merged =
        format!("query($id: ID!) {{ session(id: $id) {{ id id {selection} }} }} {fragment}");
    let answer = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(&school.teacher)
        .json(&json!({"query": written, "variables": {"id": session}}))
        .send()
        .await
        .expect("graphql request");
    assert_eq!(
        answer.headers()["content-type"],
        "application/graphql-response+json"
    );
    let written: Value = answer.json().await.expect("json");
    let merged = app
        .gql_ok(Some(&school.teacher), &merged, json!({"id": session}))
        .await;
    let records = &written["data"]["session"]["records"];
    assert_eq!(records.as_array().map(Vec::len), Some(4), "{written}");
    assert_eq!(records, &merged["session"]["records"]);
    let scanned = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "PRESENT")
        .expect("the scanned student");
    assert_eq!(scanned["__typename"], "AttendanceRecord");
    assert_eq!(scanned["sessionId"], json!(session));
    assert_eq!(scanned["who"]["id"], json!(school.students[0]));
}
