//! A teacher sees what concerns their own courses' students, nothing more: sessions stay
//! their creator's on every path (the timetable too, after a course changes hands), excuses
//! of students they do not teach stay private, the audit trail names no other account, and
//! devices stay admin-only.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_teacher_who_takes_over_a_course_reads_no_earlier_session_through_the_timetable,
    school_wide_excuses_are_read_only_by_the_students_teachers,
    the_audit_trail_shows_teachers_no_other_account,
    a_teacher_excuses_only_students_of_the_course,
    a_slots_device_is_for_admins,
);

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("instant")
        .with_timezone(&Utc)
}

/// A term over March 2027 with SE101 on DEV-01 on Monday and Tuesday, 08:00 to 09:00.
async fn monday_and_tuesday_classes(app: &TestApp, school: &School) {
    let admin = Some(school.admin.as_str());
    let term = app
        .gql_ok(
            admin,
            "mutation { createTerm(input: {name: \"Spring\", startsOn: \"2027-03-01\", endsOn: \"2027-03-31\"}) { id } }",
            json!({}),
        )
        .await["createTerm"]["id"]
        .clone();
    for weekday in ["MONDAY", "TUESDAY"] {
        app.gql_ok(
            admin,
            "mutation($i: CreateScheduleSlotInput!) { createScheduleSlot(input: $i) { id } }",
            json!({"i": {"courseId": school.course_id, "termId": term, "deviceId": "DEV-01",
                         "weekday": weekday, "startTime": "08:00:00", "endTime": "09:00:00"}}),
        )
        .await;
    }
}

const WEEK: &str = "{ timetable(from: \"2027-03-01\", to: \"2027-03-02\") { date status session { id records { status } } } \
     attendanceNotTaken(from: \"2027-03-01\", to: \"2027-03-02\") { date session { id records { status } } } }";

fn dates(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|class| class["date"].as_str().expect("date"))
        .collect()
}

async fn a_teacher_who_takes_over_a_course_reads_no_earlier_session_through_the_timetable(
    backend: Backend,
) {
    let clock = Clock::manual(at("2027-03-01T06:00:00Z"));
    let app = TestApp::spawn_with_clock(backend, clock.clone(), |_| {}).await;
    let school = app.seed_school(1).await;
    monday_and_tuesday_classes(&app, &school).await;
    // Both classes are held by T001 and closed with nobody scanned.
    // The scheduler in the background may get there first; either way, once this run has
    // returned, the class is open (or closed) and committed.
    let held = |open: bool| {
        format!(
            "SELECT COUNT(*) FROM attendance_session WHERE slot_id IS NOT NULL AND is_active = {open}"
        )
    };
    for (n, day) in ["2027-03-01", "2027-03-02"].into_iter().enumerate() {
        clock.set(at(&format!("{day}T07:55:00Z")));
        app.service.run_schedule().await.expect("run");
        assert_eq!(app.count(&held(true)).await, 1, "{day} opened");
        clock.set(at(&format!("{day}T09:00:00Z")));
        app.service.run_schedule().await.expect("run");
        assert_eq!(app.count(&held(false)).await, n as i64 + 1, "{day} closed");
    }
    // On Monday's class T001 set every status by hand: attendance was taken.
    let monday =
        app.gql_ok(Some(&school.teacher), WEEK, json!({})).await["timetable"][0]["session"].clone();
    let records = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { records { id } } }",
            json!({"id": monday["id"]}),
        )
        .await;
    for record in records["session"]["records"].as_array().unwrap() {
        app.gql_ok(
            Some(&school.teacher),
            "mutation($id: ID!) { editStatus(recordId: $id, status: PRESENT, reason: \"roll call on paper\") { id } }",
            json!({"id": record["id"]}),
        )
        .await;
    }
    let own = app.gql_ok(Some(&school.teacher), WEEK, json!({})).await;
    assert_eq!(dates(&own["attendanceNotTaken"]), ["2027-03-02"], "{own}");
    assert_eq!(
        own["timetable"][0]["session"]["records"][0]["status"],
        "PRESENT"
    );

    // The course changes hands: T002 sees its classes, not T001's sessions and records.
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!, $t: ID!) { updateCourse(id: $id, input: {teacherId: $t}) { id } }",
        json!({"id": school.course_id, "t": school.other_teacher_id}),
    )
    .await;
    let new = app
        .gql_ok(Some(&school.other_teacher), WEEK, json!({}))
        .await;
    assert_eq!(
        dates(&new["timetable"]),
        ["2027-03-01", "2027-03-02"],
        "{new}"
    );
    for class in new["timetable"].as_array().unwrap() {
        assert_eq!(class["status"], "CLOSED");
        assert!(class["session"].is_null(), "{class}");
    }
    assert_eq!(dates(&new["attendanceNotTaken"]), ["2027-03-02"], "{new}");
    assert!(new["attendanceNotTaken"][0]["session"].is_null(), "{new}");
    // Admins still see every session.
    let admin = app.gql_ok(Some(&school.admin), WEEK, json!({})).await;
    assert_eq!(admin["timetable"][0]["session"]["id"], monday["id"]);
}

const EXCUSES: &str = "{ excuses { edges { node { reason student { id } } } } }";

async fn excuse(app: &TestApp, token: &str, student: &str, course: Option<&str>) -> Value {
    app.gql(
        Some(token),
        "mutation($i: CreateExcuseInput!) { createExcuse(input: $i) { id createdBy { username } } }",
        json!({"i": {"studentId": student, "courseId": course, "from": "2027-01-04",
                     "to": "2027-01-05", "reason": format!("private note on {student}")}}),
    )
    .await
}

fn excused_students(body: &Value) -> Vec<String> {
    body["excuses"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["student"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn school_wide_excuses_are_read_only_by_the_students_teachers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    // SE101 (T001) is taught to sections A and B, SE201 (T002) to section C.
    let mine = &school.students[0];
    excuse(&app, &school.admin, mine, None).await;
    excuse(&app, &school.admin, &school.outsider, None).await;
    let t001 = app.gql_ok(Some(&school.teacher), EXCUSES, json!({})).await;
    assert_eq!(excused_students(&t001), vec![mine.to_owned()], "{t001}");
    assert!(!t001.to_string().contains(&school.outsider));
    let t002 = app
        .gql_ok(Some(&school.other_teacher), EXCUSES, json!({}))
        .await;
    assert_eq!(
        excused_students(&t002),
        vec![school.outsider.to_owned()],
        "{t002}"
    );
    let all = app.gql_ok(Some(&school.admin), EXCUSES, json!({})).await;
    assert_eq!(excused_students(&all).len(), 2);
}

async fn the_audit_trail_shows_teachers_no_other_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let student = &school.students[0];
    let by_admin = excuse(&app, &school.admin, student, Some(&school.course_id)).await;
    assert_eq!(
        by_admin["data"]["createExcuse"]["createdBy"]["username"],
        "admin"
    );
    let by_teacher = excuse(&app, &school.teacher, student, Some(&school.course_id)).await;
    assert_eq!(
        by_teacher["data"]["createExcuse"]["createdBy"]["username"],
        "t001"
    );
    let listed = app
        .gql_ok(
            Some(&school.teacher),
            "{ excuses { edges { node { createdBy { username } } } } }",
            json!({}),
        )
        .await;
    let creators: Vec<&Value> = listed["excuses"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"]["createdBy"])
        .collect();
    assert_eq!(creators, [&json!({"username": "t001"}), &Value::Null]);

    // An admin's and the teacher's own edit of a record in the teacher's session.
    let session = app.open_session(&school).await;
    let closed = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($id: ID!) { closeSession(id: $id) { session { records { id } } } }",
            json!({"id": session}),
        )
        .await;
    let record = closed["closeSession"]["session"]["records"][0]["id"].clone();
    for (token, status) in [(&school.admin, "PERMISSION"), (&school.teacher, "PRESENT")] {
        app.gql_ok(
            Some(token),
            "mutation($id: ID!, $s: AttendanceStatus!) { editStatus(recordId: $id, status: $s) { id } }",
            json!({"id": record, "s": status}),
        )
        .await;
    }
    let trail = "query($id: ID!) { recordChanges(sessionId: $id) { edges { node { newStatus changedBy { username } } } } }";
    let seen = |body: Value| -> Vec<Value> {
        body["recordChanges"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["changedBy"].clone())
            .collect()
    };
    let teacher = app
        .gql_ok(Some(&school.teacher), trail, json!({"id": session}))
        .await;
    assert_eq!(seen(teacher), [json!({"username": "t001"}), Value::Null]);
    let admin = app
        .gql_ok(Some(&school.admin), trail, json!({"id": session}))
        .await;
    assert_eq!(
        seen(admin),
        [json!({"username": "t001"}), json!({"username": "admin"})]
    );
}

async fn a_teacher_excuses_only_students_of_the_course(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let course = Some(school.course_id.as_str());
    // A student of another course is answered exactly as a student that does not exist.
    let stranger = excuse(&app, &school.teacher, &school.outsider, course).await;
    let missing = excuse(&app, &school.teacher, "987654", course).await;
    for body in [&stranger, &missing] {
        assert_eq!(error_code(body), "BAD_USER_INPUT", "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["field"], "studentId",
            "{body}"
        );
    }
    assert_eq!(
        stranger["errors"][0]["message"],
        missing["errors"][0]["message"]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM excuse").await, 0);
    let own = excuse(&app, &school.teacher, &school.students[0], course).await;
    assert!(own["data"]["createExcuse"]["id"].is_string(), "{own}");
}

async fn a_slots_device_is_for_admins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    monday_and_tuesday_classes(&app, &school).await;
    let query = "{ scheduleSlots { deviceId device { id name } } }";
    let teacher = app.gql(Some(&school.teacher), query, json!({})).await;
    assert_eq!(
        teacher["data"]["scheduleSlots"][0]["deviceId"], "DEV-01",
        "{teacher}"
    );
    assert!(
        teacher["data"]["scheduleSlots"][0]["device"].is_null(),
        "{teacher}"
    );
    assert_eq!(error_code(&teacher), "FORBIDDEN", "{teacher}");
    let admin = app.gql_ok(Some(&school.admin), query, json!({})).await;
    assert_eq!(admin["scheduleSlots"][0]["device"]["name"], "Room 1");
}
