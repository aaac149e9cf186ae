//! Deletions keep history: whatever anything depends on is refused with `IN_USE`, the
//! database refuses too, and no sequence of directory operations removes a record or an
//! audit entry.

use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use super::{message, refused};
use crate::both_databases;
use crate::common::*;

both_databases!(
    deletes_of_rows_history_depends_on_are_refused_naming_the_dependents,
    rows_nothing_depends_on_are_deleted,
    the_database_refuses_to_cascade_into_history,
);

async fn deletes_of_rows_history_depends_on_are_refused_naming_the_dependents(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let admin = school.admin.as_str();
    let (session, _) = app
        .open_session_and_scan(&school, &school.students[0])
        .await;
    assert_eq!(app.close_session(&school.teacher, &session).await, 3);
    let records = app.count("SELECT COUNT(*) FROM attendance_record").await;
    assert_eq!(records, 4);

    for (document, id, expected) in [
        (
            "mutation($id: ID!) { deleteTeacher(id: $id) }",
            &school.teacher_id,
            "1 course and 1 session depend on this teacher",
        ),
        (
            "mutation($id: ID!) { deleteCourse(id: $id) }",
            &school.course_id,
            "1 session depends on this course",
        ),
        (
            "mutation($id: ID!) { deleteSection(id: $id) }",
            &school.sections[0],
            "2 students and 1 course depend on this section",
        ),
        (
            "mutation($id: ID!) { deleteDepBatch(id: $id) }",
            &school.dep_batch_id,
            "3 sections depend on this dep-batch",
        ),
        (
            "mutation($id: ID!) { deleteDevice(id: $id) }",
            &school.device_row_id,
            "1 session depends on this device",
        ),
        (
            "mutation($id: ID!) { deleteStudent(id: $id) }",
            &school.students[1],
            "1 attendance record depends on this student",
        ),
    ] {
        let body = refused(&app, admin, document, json!({"id": id})).await;
        assert_eq!(
            (error_code(&body), error_reason(&body)),
            ("CONFLICT", "IN_USE"),
            "{document}: {body}"
        );
        assert_eq!(message(&body), expected, "{document}");
    }

    // An admin deletes a record: the student's audit entry still depends on them.
    let record = app
        .gql_ok(
            Some(admin),
            "query($s: ID!) { attendanceRecords(studentId: $s) { nodes { id } } }",
            json!({"s": school.students[1]}),
        )
        .await["attendanceRecords"]["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.gql_ok(
        Some(admin),
        "mutation($id: ID!) { deleteAttendanceRecord(id: $id) }",
        json!({"id": record}),
    )
    .await;
    let body = refused(
        &app,
        admin,
        "mutation($id: ID!) { deleteStudent(id: $id) }",
        json!({"id": school.students[1]}),
    )
    .await;
    assert_eq!(error_reason(&body), "IN_USE");
    assert_eq!(message(&body), "1 audit entry depends on this student");

    // A teacher whose only trace is an edit they made is kept for it too.
    let (lone_id, lone) = app.create_teacher(admin, "T077").await;
    let lone_course = app
        .create_course(admin, "SE777", &lone_id, &[&school.sections[0]])
        .await;
    let lone_session = app
        .create_session(
            &lone,
            json!({"courseId": lone_course, "deviceId": school.device_code}),
        )
        .await;
    app.close_session(&lone, &lone_session).await;
    let record = app
        .gql_ok(
            Some(&lone),
            "query($id: ID!) { session(id: $id) { records { id } } }",
            json!({"id": lone_session}),
        )
        .await["session"]["records"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.gql_ok(
        Some(&lone),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PERMISSION) { id } }",
        json!({"id": record}),
    )
    .await;
    let body = refused(
        &app,
        admin,
        "mutation($id: ID!) { deleteTeacher(id: $id) }",
        json!({"id": lone_id}),
    )
    .await;
    assert_eq!(
        message(&body),
        "1 course, 1 session and 1 audit entry depend on this teacher"
    );

    // Nothing above removed a record or an audit entry but the one deleted by hand.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_record").await,
        records - 1 + 2
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM record_change").await, 2);
}

async fn rows_nothing_depends_on_are_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();

    let batch = app
        .gql_ok(
            Some(admin),
            "mutation { createDepBatch(input: {dep: \"Law\", batch: \"2027\"}) { id } }",
            json!({}),
        )
        .await["createDepBatch"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let section = app.create_section(admin, &batch, "L1").await;
    let student = app.create_student(admin, "LAW001", &section).await;
    let (teacher_id, teacher) = app.create_teacher(admin, "T050").await;
    let course = app
        .create_course(admin, "LAW101", &teacher_id, &[&section])
        .await;
    let (device_id, device_key) = app.register_device(admin, "DEV-77").await;

    // Each goes once what depended on it is gone, in dependency order.
    for (document, id) in [
        ("mutation($id: ID!) { deleteCourse(id: $id) }", &course),
        ("mutation($id: ID!) { deleteTeacher(id: $id) }", &teacher_id),
        ("mutation($id: ID!) { deleteStudent(id: $id) }", &student),
        ("mutation($id: ID!) { deleteSection(id: $id) }", &section),
        ("mutation($id: ID!) { deleteDepBatch(id: $id) }", &batch),
        ("mutation($id: ID!) { deleteDevice(id: $id) }", &device_id),
    ] {
        let data = app.gql_ok(Some(admin), document, json!({"id": id})).await;
        assert_eq!(
            data.as_object().unwrap().values().next(),
            Some(&json!(true))
        );
        let again = refused(&app, admin, document, json!({"id": id})).await;
        assert_eq!(error_code(&again), "NOT_FOUND", "{document} twice");
    }
    // The deleted teacher's login and the deleted device's key stop working.
    let me = app.gql(Some(&teacher), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED");
    let (status, _) = app
        .scan(
            &device_key,
            &school.students[0],
            &app.today(),
            &app.now_time(),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM app_user WHERE teacher_id IS NOT NULL")
            .await,
        2
    );
}

async fn the_database_refuses_to_cascade_into_history(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let session = app.open_session(&school).await;
    assert_eq!(app.close_session(&school.teacher, &session).await, 2);
    let record = app
        .count(&format!(
            "SELECT CAST(MIN(id) AS BIGINT) FROM attendance_record WHERE session_id = {session}"
        ))
        .await;
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PERMISSION) { id } }",
        json!({"id": record.to_string()}),
    )
    .await;

    let db = &app.service.db;
    let backend_kind = db.get_database_backend();
    for sql in [
        format!("DELETE FROM student WHERE id = {}", school.students[0]),
        format!("DELETE FROM student WHERE id = {}", school.students[1]),
        format!("DELETE FROM attendance_session WHERE id = {session}"),
        format!("DELETE FROM device WHERE id = {}", school.device_row_id),
        format!("DELETE FROM teacher WHERE id = {}", school.teacher_id),
        format!("DELETE FROM course WHERE id = {}", school.course_id),
    ] {
        let result = db
            .execute_raw(Statement::from_string(backend_kind, sql.clone()))
            .await;
        assert!(result.is_err(), "the database allowed {sql}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM record_change").await, 1);
}
