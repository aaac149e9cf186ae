//! Excused absences (SPEC 8.3): before and after the close, revocation (a person's edit
//! stands), a course-bound excuse, a scan during an excuse, the audit trail, who may, bad
//! dates, and `studentReport` checked against the records.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    an_excuse_before_the_close_gives_permission_and_names_itself,
    an_excuse_after_the_close_turns_absences_into_permission_and_revoking_turns_them_back,
    a_course_bound_excuse_leaves_other_courses_alone_and_a_scan_still_counts,
    who_may_excuse_and_which_dates,
    the_student_report_agrees_with_the_records,
);

const CREATE: &str = "mutation($i: CreateExcuseInput!) { createExcuse(input: $i) { id from to reason revokedAt course { code } student { id } createdBy { username } } }";

async fn excuse(app: &TestApp, token: &str, input: Value) -> String {
    app.gql_ok(Some(token), CREATE, json!({"i": input})).await["createExcuse"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Student id -> (record id, status) in a session.
async fn statuses(app: &TestApp, token: &str, session: &str) -> HashMap<String, (String, String)> {
    app.gql_ok(
        Some(token),
        "query($id: ID!) { session(id: $id) { records { id studentId status } } }",
        json!({"id": session}),
    )
    .await["session"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["studentId"].as_str().unwrap().to_owned(),
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// The audit entries of one student in one session, newest first.
async fn trail(app: &TestApp, admin: &str, session: &str, student: &str) -> Value {
    app.gql_ok(
        Some(admin),
        "query($s: ID!, $st: ID!) { recordChanges(sessionId: $s, studentId: $st) { nodes { kind newStatus excuseId } } }",
        json!({"s": session, "st": student}),
    )
    .await["recordChanges"]["nodes"]
        .clone()
}

async fn an_excuse_before_the_close_gives_permission_and_names_itself(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let today = app.today();
    let id = excuse(
        &app,
        &school.admin,
        json!({"studentId": school.students[0], "from": today, "to": today, "reason": "doctor's note"}),
    )
    .await;
    let session = app.open_session(&school).await;
    assert_eq!(
        app.close_session(&school.teacher, &session).await,
        3,
        "three absent"
    );
    let records = statuses(&app, &school.teacher, &session).await;
    assert_eq!(records[&school.students[0]].1, "PERMISSION");
    assert_eq!(records[&school.students[1]].1, "ABSENT");
    let trail = app
        .gql_ok(
            Some(&school.admin),
            "query($s: ID!) { recordChanges(sessionId: $s) { nodes { kind oldStatus newStatus excuseId studentId changedBy { username } } } }",
            json!({"s": session}),
        )
        .await;
    assert_eq!(
        trail["recordChanges"]["nodes"],
        json!([{"kind": "EXCUSE", "oldStatus": "ABSENT", "newStatus": "PERMISSION",
                "excuseId": id, "studentId": school.students[0], "changedBy": null}])
    );
}

async fn an_excuse_after_the_close_turns_absences_into_permission_and_revoking_turns_them_back(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let today = app.today();
    let teacher = school.teacher.as_str();
    let sick = &school.students[1];
    // Two classes of the course today, both closed with everyone absent.
    let first = app.open_session(&school).await;
    assert_eq!(app.close_session(teacher, &first).await, 4);
    let second = app.open_session(&school).await;
    assert_eq!(app.close_session(teacher, &second).await, 4);

    let id = excuse(
        &app,
        teacher,
        json!({"studentId": sick, "from": today, "to": today, "reason": "flu", "courseId": school.course_id}),
    )
    .await;
    for session in [&first, &second] {
        let records = statuses(&app, teacher, session).await;
        assert_eq!(records[sick].1, "PERMISSION", "at once, in {session}");
        assert_eq!(
            records[&school.students[0]].1, "ABSENT",
            "others stay absent"
        );
    }
    // The teacher then decides the second one was an absence after all.
    let edited = statuses(&app, teacher, &second).await[sick].0.clone();
    app.gql_ok(
        Some(teacher),
        "mutation($r: ID!) { editStatus(recordId: $r, status: ABSENT, reason: \"seen in town\") { status } }",
        json!({"r": edited}),
    )
    .await;
    // Revoking turns back the first, and leaves the teacher's decision alone.
    let revoked = app
        .gql_ok(
            Some(teacher),
            "mutation($id: ID!) { revokeExcuse(id: $id) { revokedAt } }",
            json!({"id": id}),
        )
        .await;
    assert!(revoked["revokeExcuse"]["revokedAt"].is_string());
    assert_eq!(statuses(&app, teacher, &first).await[sick].1, "ABSENT");
    assert_eq!(statuses(&app, teacher, &second).await[sick].1, "ABSENT");
    assert_eq!(
        trail(&app, &school.admin, &first, sick).await,
        json!([{"kind": "EXCUSE_REVOKED", "newStatus": "ABSENT", "excuseId": id},
               {"kind": "EXCUSE", "newStatus": "PERMISSION", "excuseId": id}])
    );
    assert_eq!(
        trail(&app, &school.admin, &second, sick).await,
        json!([{"kind": "EDIT", "newStatus": "ABSENT", "excuseId": null},
               {"kind": "EXCUSE", "newStatus": "PERMISSION", "excuseId": id}])
    );
    // A second revocation changes nothing; a later close no longer excuses.
    app.gql_ok(
        Some(teacher),
        "mutation($id: ID!) { revokeExcuse(id: $id) { id } }",
        json!({"id": id}),
    )
    .await;
    let third = app.open_session(&school).await;
    app.close_session(teacher, &third).await;
    assert_eq!(statuses(&app, teacher, &third).await[sick].1, "ABSENT");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM record_change WHERE kind = 'excuse_revoked'")
            .await,
        1
    );
}

async fn a_course_bound_excuse_leaves_other_courses_alone_and_a_scan_still_counts(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let today = app.today();
    // Section A also takes the other teacher's SE301.
    let se301 = app
        .create_course(
            &school.admin,
            "SE301",
            &school.other_teacher_id,
            &[&school.sections[0]],
        )
        .await;
    let (_, _) = app.register_device(&school.admin, "DEV-02").await;
    let student = &school.students[0];
    excuse(
        &app,
        &school.other_teacher,
        json!({"studentId": student, "from": today, "to": today, "reason": "match", "courseId": se301}),
    )
    .await;
    let se101 = app.open_session(&school).await;
    let other = app
        .create_session(
            &school.other_teacher,
            json!({"courseId": se301, "deviceId": "DEV-02"}),
        )
        .await;
    app.close_session(&school.teacher, &se101).await;
    app.close_session(&school.other_teacher, &other).await;
    assert_eq!(
        statuses(&app, &school.teacher, &se101).await[student].1,
        "ABSENT"
    );
    assert_eq!(
        statuses(&app, &school.other_teacher, &other).await[student].1,
        "PERMISSION"
    );

    // Excused for everything, the student comes anyway: the scan counts.
    excuse(
        &app,
        &school.admin,
        json!({"studentId": school.students[1], "from": today, "to": today, "reason": "trip"}),
    )
    .await;
    let (session, _) = app
        .open_session_and_scan(&school, &school.students[1])
        .await;
    app.close_session(&school.teacher, &session).await;
    assert_eq!(
        statuses(&app, &school.teacher, &session).await[&school.students[1]].1,
        "PRESENT"
    );
}

async fn who_may_excuse_and_which_dates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let student = &school.students[0];
    let input = |course: Option<&str>| {
        let mut i = json!({"studentId": student, "from": "2027-03-01", "to": "2027-03-03", "reason": "note"});
        if let Some(course) = course {
            i["courseId"] = json!(course);
        }
        json!({"i": i})
    };
    for (token, course, code) in [
        (&school.teacher, None, "FORBIDDEN"),
        (
            &school.teacher,
            Some(school.other_course_id.as_str()),
            "FORBIDDEN",
        ),
        (&school.device_key, None, "FORBIDDEN"),
    ] {
        let body = app.gql(Some(token), CREATE, input(course)).await;
        assert_eq!(error_code(&body), code, "{body}");
    }
    let own = app
        .gql_ok(
            Some(&school.teacher),
            CREATE,
            input(Some(&school.course_id)),
        )
        .await;
    assert_eq!(own["createExcuse"]["course"]["code"], "SE101");
    assert_eq!(own["createExcuse"]["createdBy"]["username"], "t001");
    // The other teacher can neither see nor revoke it.
    let id = own["createExcuse"]["id"].clone();
    let foreign = app
        .gql(
            Some(&school.other_teacher),
            "mutation($id: ID!) { revokeExcuse(id: $id) { id } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(error_code(&foreign), "NOT_FOUND");
    let listed = app
        .gql_ok(
            Some(&school.other_teacher),
            "{ excuses { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["excuses"]["totalCount"], 0);
    let listed = app
        .gql_ok(
            Some(&school.admin),
            "query($s: ID!) { excuses(studentId: $s, from: \"2027-03-03\") { totalCount nodes { reason } } }",
            json!({"s": student}),
        )
        .await;
    assert_eq!(listed["excuses"]["totalCount"], 1);

    for (from, to) in [("2027-03-05", "2027-03-01"), ("2027-01-01", "2028-06-01")] {
        let body = app
            .gql(
                Some(&school.admin),
                CREATE,
                json!({"i": {"studentId": student, "from": from, "to": to, "reason": "x"}}),
            )
            .await;
        assert_eq!(
            (
                error_code(&body),
                body["errors"][0]["extensions"]["field"].as_str()
            ),
            ("BAD_USER_INPUT", Some("to")),
            "{from}..{to}"
        );
    }
    // With terms, the longest term is the limit.
    app.gql_ok(
        Some(&school.admin),
        "mutation { createTerm(input: {name: \"Short\", startsOn: \"2027-03-01\", endsOn: \"2027-03-31\"}) { id } }",
        json!({}),
    )
    .await;
    let long = app
        .gql(
            Some(&school.admin),
            CREATE,
            json!({"i": {"studentId": student, "from": "2027-03-01", "to": "2027-04-15", "reason": "x"}}),
        )
        .await;
    assert_eq!(error_code(&long), "BAD_USER_INPUT");
}

async fn the_student_report_agrees_with_the_records(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let today = app.today();
    let student = &school.students[0];
    // A late scan, an absence, an excused absence and a scan on time, in SE101.
    let late = app
        .create_session(
            &school.teacher,
            json!({"courseId": school.course_id, "deviceId": school.device_code,
                   "startTime": "00:00:00", "graceMinutes": 0}),
        )
        .await;
    app.scan_now(&school, student).await;
    app.close_session(&school.teacher, &late).await;
    let absent = app.open_session(&school).await;
    app.close_session(&school.teacher, &absent).await;
    excuse(
        &app,
        &school.admin,
        json!({"studentId": student, "from": today, "to": today, "reason": "doctor"}),
    )
    .await;
    let excused = app.open_session(&school).await;
    app.close_session(&school.teacher, &excused).await;
    let on_time = app.open_session(&school).await;
    app.scan_now(&school, student).await;
    app.close_session(&school.teacher, &on_time).await;

    // The figures by hand, from the records.
    let records = app
        .gql_ok(
            Some(&school.admin),
            "query($s: ID!) { attendanceRecords(studentId: $s, first: 100) { nodes { status lateMinutes session { course { code } } } } }",
            json!({"s": student}),
        )
        .await;
    let mut by_hand: HashMap<String, [i64; 4]> = HashMap::new();
    for r in records["attendanceRecords"]["nodes"].as_array().unwrap() {
        let code = r["session"]["course"]["code"].as_str().unwrap().to_owned();
        let entry = by_hand.entry(code).or_default();
        match r["status"].as_str().unwrap() {
            "PRESENT" => {
                entry[0] += 1;
                if r["lateMinutes"].as_i64().unwrap_or(0) > 0 {
                    entry[1] += 1;
                }
            }
            "ABSENT" => entry[2] += 1,
            _ => entry[3] += 1,
        }
    }
    // The creation of the excuse turned the earlier automatic absence into permission too.
    assert_eq!(by_hand["SE101"][2], 0);
    assert_eq!(by_hand["SE101"][3], 2);

    for (token, courses) in [
        (&school.admin, 1),
        (&school.teacher, 1),
        (&school.other_teacher, 0),
    ] {
        let report = app
            .gql_ok(
                Some(token),
                "query($s: ID!) { studentReport(studentId: $s) { course { code } present late absent permission rate } }",
                json!({"s": student}),
            )
            .await;
        let rows = report["studentReport"].as_array().unwrap();
        assert_eq!(rows.len(), courses, "{report}");
        for row in rows {
            let code = row["course"]["code"].as_str().unwrap();
            let [present, late, absent, permission] = by_hand[code];
            assert_eq!(
                (
                    &row["present"],
                    &row["late"],
                    &row["absent"],
                    &row["permission"]
                ),
                (
                    &json!(present),
                    &json!(late),
                    &json!(absent),
                    &json!(permission)
                ),
                "{code}"
            );
            let total = (present + absent + permission) as f64;
            assert!((row["rate"].as_f64().unwrap() - present as f64 / total).abs() < 1e-9);
        }
    }
    // A range without sessions counts nothing but still lists the course.
    let empty = app
        .gql_ok(
            Some(&school.admin),
            "query($s: ID!) { studentReport(studentId: $s, from: \"2001-01-01\", to: \"2001-12-31\") { present rate } }",
            json!({"s": student}),
        )
        .await;
    assert_eq!(
        empty["studentReport"],
        json!([{"present": 0, "rate": null}])
    );
}
