//! The audit trail outlives what it describes: a deleted record leaves an entry, and
//! `recordChanges` lists the trail newest first, to admins all of it, to teachers theirs.

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_deleted_record_leaves_an_audit_entry_listed_newest_first,
    teachers_see_the_trail_of_their_own_sessions_only,
);

const TRAIL: &str = "query($session: ID, $student: ID, $first: Int, $after: String) { \
    recordChanges(sessionId: $session, studentId: $student, first: $first, after: $after) { \
      totalCount pageInfo { hasNextPage endCursor } \
      nodes { id recordId sessionId studentId kind oldStatus newStatus reason \
              changedBy { username } student { studentCode } session { id } } } }";

async fn trail(app: &TestApp, token: &str, variables: Value) -> Value {
    app.gql_ok(Some(token), TRAIL, variables).await["recordChanges"].clone()
}

async fn a_deleted_record_leaves_an_audit_entry_listed_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();
    let (session, scanned) = app
        .open_session_and_scan(&school, &school.students[0])
        .await;
    let record = scanned["id"].to_string().trim_matches('"').to_owned();
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PERMISSION, reason: \"doctor\") { id } }",
        json!({"id": record}),
    )
    .await;
    let deleted = app
        .gql_ok(
            Some(admin),
            "mutation($id: ID!) { deleteAttendanceRecord(id: $id, reason: \"entered twice\") }",
            json!({"id": record}),
        )
        .await;
    assert_eq!(deleted["deleteAttendanceRecord"], true);
    let gone = app
        .gql_ok(
            Some(admin),
            "query($s: ID!) { attendanceRecords(sessionId: $s) { totalCount } }",
            json!({"s": session}),
        )
        .await;
    assert_eq!(gone["attendanceRecords"]["totalCount"], 0);

    let entries = trail(&app, admin, json!({"session": session})).await;
    assert_eq!(entries["totalCount"], 2);
    let code = app
        .gql_ok(
            Some(admin),
            "query($id: ID!) { student(id: $id) { studentCode } }",
            json!({"id": school.students[0]}),
        )
        .await["student"]["studentCode"]
        .clone();
    assert_eq!(
        entries["nodes"],
        json!([
            {"id": entries["nodes"][0]["id"], "recordId": record, "sessionId": session,
             "studentId": school.students[0], "kind": "DELETE", "oldStatus": "PERMISSION",
             "newStatus": null, "reason": "entered twice", "changedBy": {"username": ADMIN_USER},
             "student": {"studentCode": code}, "session": {"id": session}},
            {"id": entries["nodes"][1]["id"], "recordId": record, "sessionId": session,
             "studentId": school.students[0], "kind": "EDIT", "oldStatus": "PRESENT",
             "newStatus": "PERMISSION", "reason": "doctor", "changedBy": {"username": "t001"},
             "student": {"studentCode": code}, "session": {"id": session}},
        ])
    );
    let by_student = trail(&app, admin, json!({"student": school.students[0]})).await;
    assert_eq!(by_student["totalCount"], 2);
    let other = trail(&app, admin, json!({"student": school.students[1]})).await;
    assert_eq!(other["totalCount"], 0);

    // Pages follow each other newest first, without gaps or repeats.
    let first = trail(&app, admin, json!({"first": 1})).await;
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["nodes"][0]["kind"], "DELETE");
    let second = trail(
        &app,
        admin,
        json!({"first": 1, "after": first["pageInfo"]["endCursor"]}),
    )
    .await;
    assert_eq!(second["pageInfo"]["hasNextPage"], false);
    assert_eq!(second["nodes"][0]["kind"], "EDIT");

    // Deleting the same record again finds nothing and writes nothing.
    let again = app
        .gql(
            Some(admin),
            "mutation($id: ID!) { deleteAttendanceRecord(id: $id) }",
            json!({"id": record}),
        )
        .await;
    assert_eq!(error_code(&again), "NOT_FOUND");
    assert_eq!(app.count("SELECT COUNT(*) FROM record_change").await, 2);
}

async fn teachers_see_the_trail_of_their_own_sessions_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let session = app.open_session(&school).await;
    let data = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($id: ID!) { closeSession(id: $id) { session { records { id } } } }",
            json!({"id": session}),
        )
        .await;
    let record = data["closeSession"]["session"]["records"][0]["id"].clone();
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PERMISSION) { id } }",
        json!({"id": record}),
    )
    .await;

    let own = trail(&app, &school.teacher, json!({})).await;
    assert_eq!(own["totalCount"], 1);
    let foreign = trail(&app, &school.other_teacher, json!({})).await;
    assert_eq!(foreign["totalCount"], 0);
    let asked = trail(&app, &school.other_teacher, json!({"session": session})).await;
    assert_eq!(asked["totalCount"], 0);
    let device = app
        .gql(
            Some(&school.device_key),
            "{ recordChanges { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&device), "FORBIDDEN");
}
