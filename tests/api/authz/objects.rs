//! Object-level authorization: a teacher handed another teacher's ids (or ids that do not
//! exist) changes nothing and learns nothing, through top-level and nested paths alike.

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(another_teachers_ids_change_nothing_and_leak_nothing);

async fn snapshot(app: &TestApp) -> (i64, i64, i64, i64) {
    (
        app.count("SELECT COUNT(*) FROM attendance_record").await,
        app.count("SELECT COUNT(*) FROM record_change").await,
        app.count("SELECT COUNT(*) FROM attendance_session WHERE is_active")
            .await,
        app.count("SELECT COUNT(*) FROM attendance_record WHERE status = 'permission'")
            .await,
    )
}

async fn another_teachers_ids_change_nothing_and_leak_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    // Teacher A (school.teacher) runs a session with a scan, an edit and absences.
    let session = app.open_session(&school).await;
    let (_, record) = app
        .scan_today(&school, &school.students[0], "08:00:00")
        .await;
    let record_id = record["id"].to_string();
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PERMISSION, reason: \"private note\") { id } }",
        json!({"id": record_id}),
    )
    .await;
    let before = snapshot(&app).await;

    // Teacher B tries every id-taking operation on A's objects and on ids that do not exist.
    let intruder = Some(school.other_teacher.as_str());
    let missing = "987654";
    for id in [session.as_str(), missing] {
        let body = app
            .gql(
                intruder,
                "query($id: ID!) { session(id: $id) { id records { id } } }",
                json!({"id": id}),
            )
            .await;
        assert!(body["data"]["session"].is_null(), "{body}");
        let close = app
            .gql(
                intruder,
                "mutation($id: ID!) { closeSession(id: $id) { markedAbsent } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(error_code(&close), "NOT_FOUND");
        let records = app
            .gql(intruder, "query($id: ID) { attendanceRecords(sessionId: $id) { totalCount edges { node { id } } } }", json!({"id": id}))
            .await;
        assert_eq!(records["data"]["attendanceRecords"]["totalCount"], 0);
    }
    let mut not_found_bodies: Vec<Value> = Vec::new();
    for id in [record_id.as_str(), missing] {
        let edit = app
            .gql(
                intruder,
                "mutation($id: ID!) { editStatus(recordId: $id, status: ABSENT) { id } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(error_code(&edit), "NOT_FOUND");
        not_found_bodies.push(edit["errors"][0]["extensions"].clone());
        let delete = app
            .gql(
                intruder,
                "mutation($id: ID!) { deleteAttendanceRecord(id: $id) }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(error_code(&delete), "FORBIDDEN");
    }
    assert_eq!(
        not_found_bodies[0], not_found_bodies[1],
        "a foreign id looks like a missing one"
    );
    let open = app
        .gql(
            intruder,
            "mutation($i: CreateSessionInput!) { createSession(input: $i) { id } }",
            json!({"i": {"courseId": school.course_id, "deviceId": school.device_code}}),
        )
        .await;
    assert_eq!(error_code(&open), "FORBIDDEN");

    // Nested paths: the course, its teacher and students are directory data, but sessions,
    // records and their audit trail stay hidden.
    let nested = app
        .gql(
            intruder,
            "query($id: ID!) { course(id: $id) { code sessions { id records { id changes { reason } } } teacher { username courses { sessions { id } } } } }",
            json!({"id": school.course_id}),
        )
        .await;
    assert_eq!(nested["data"]["course"]["sessions"], json!([]), "{nested}");
    assert!(
        nested["data"]["course"]["teacher"]["username"].is_null(),
        "another teacher's login stays private"
    );
    assert_eq!(
        nested["data"]["course"]["teacher"]["courses"][0]["sessions"],
        json!([])
    );
    let all_sessions = app
        .gql(
            intruder,
            "{ sessions { totalCount } attendanceRecords { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(all_sessions["data"]["sessions"]["totalCount"], 0);
    assert_eq!(all_sessions["data"]["attendanceRecords"]["totalCount"], 0);
    let text = nested.to_string() + &all_sessions.to_string();
    assert!(!text.contains("private note"));

    assert_eq!(snapshot(&app).await, before, "nothing changed");
}
