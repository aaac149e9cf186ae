//! Early warnings (SPEC 8.4): a rate warning raised once per crossing and again after the
//! student recovered, absences in a row, a course's rule over the school-wide one, excuses
//! and revocations moving the line, who sees and sets what, and a close whose statement
//! count does not grow with the roster.

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_rate_warning_is_raised_once_per_crossing_and_again_after_recovery,
    absences_in_a_row_follow_excuses_and_the_course_rule_wins,
    who_sets_rules_and_sees_warnings,
    a_close_with_rules_and_webhooks_costs_the_same_statements_for_any_roster,
);

const SET_RULE: &str = "mutation($i: WarningRuleInput!) { setWarningRule(input: $i) { id minRate afterSessions consecutiveAbsences course { id } } }";
const WARNINGS: &str = "query($c: ID, $s: ID) { attendanceWarnings(courseId: $c, studentId: $s, first: 100) { totalCount nodes { id kind rate sessions consecutiveAbsences raisedAt clearedAt student { id } course { id } } } }";

/// Opens a session, scans `present`, closes it; returns its id.
async fn held(app: &TestApp, school: &School, present: &[&str]) -> String {
    let session = app.open_session(school).await;
    for student in present {
        let (status, body) = app.scan_now(school, student).await;
        assert_eq!(status, 201, "{body}");
    }
    app.close_session(&school.teacher, &session).await;
    session
}

/// The record id of `student` in `session`.
async fn record_of(app: &TestApp, token: &str, session: &str, student: &str) -> String {
    let data = app
        .gql_ok(
            Some(token),
            "query($id: ID!) { session(id: $id) { records { id studentId } } }",
            json!({"id": session}),
        )
        .await;
    student_record(&data["session"], student)["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn edit(app: &TestApp, token: &str, record: &str, status: &str) {
    app.gql_ok(
        Some(token),
        "mutation($id: ID!, $s: AttendanceStatus!) { editStatus(recordId: $id, status: $s) { id } }",
        json!({"id": record, "s": status}),
    )
    .await;
}

async fn warnings(
    app: &TestApp,
    token: &str,
    course: Option<&str>,
    student: Option<&str>,
) -> Vec<Value> {
    app.gql_ok(Some(token), WARNINGS, json!({"c": course, "s": student}))
        .await["attendanceWarnings"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

fn kinds(list: &[Value]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = list
        .iter()
        .map(|w| {
            (
                w["kind"].as_str().unwrap().to_owned(),
                w["clearedAt"].is_null(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn a_rate_warning_is_raised_once_per_crossing_and_again_after_recovery(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (a, b) = (school.students[0].as_str(), school.students[1].as_str());
    let rule = app
        .gql_ok(
            Some(&school.admin),
            SET_RULE,
            json!({"i": {"minRate": 0.6, "afterSessions": 2}}),
        )
        .await;
    assert_eq!(rule["setWarningRule"]["course"], Value::Null, "school-wide");

    // One session each way: nobody is judged before their second session.
    let first = held(&app, &school, &[a]).await;
    assert!(warnings(&app, &school.admin, None, None).await.is_empty());

    // A: 1 of 2 (0.5), B: 0 of 2. Both cross 0.6.
    let second = held(&app, &school, &[]).await;
    let raised = warnings(&app, &school.admin, None, Some(a)).await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["kind"], "LOW_RATE");
    assert_eq!(raised[0]["rate"], 0.5);
    assert_eq!(raised[0]["sessions"], 2);
    assert_eq!(raised[0]["course"]["id"], school.course_id.as_str());
    assert_eq!(warnings(&app, &school.admin, None, Some(b)).await.len(), 1);

    // Still below at the next close: no second warning for the same crossing.
    let third = held(&app, &school, &[]).await;
    assert_eq!(warnings(&app, &school.admin, None, None).await.len(), 2);

    // A teacher's correction takes A back above the line (2 of 3): the warning clears.
    let record = record_of(&app, &school.teacher, &second, a).await;
    edit(&app, &school.teacher, &record, "PRESENT").await;
    let after = warnings(&app, &school.admin, None, Some(a)).await;
    assert_eq!(
        kinds(&after),
        vec![("LOW_RATE".into(), false)],
        "cleared, not removed"
    );

    // Below again: a new crossing, a new warning; the first stays, cleared.
    edit(&app, &school.teacher, &record, "ABSENT").await;
    let again = warnings(&app, &school.admin, None, Some(a)).await;
    assert_eq!(
        kinds(&again),
        vec![("LOW_RATE".into(), false), ("LOW_RATE".into(), true)]
    );
    assert_eq!(
        again[0]["rate"].as_f64().unwrap(),
        1.0 / 3.0,
        "newest first"
    );

    // Deleting a record is a change too: A's only present record goes, still below, no
    // new warning; B is untouched.
    let present = record_of(&app, &school.admin, &first, a).await;
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!) { deleteAttendanceRecord(id: $id, reason: \"scanned twice\") }",
        json!({"id": present}),
    )
    .await;
    assert_eq!(warnings(&app, &school.admin, None, Some(a)).await.len(), 2);
    assert_eq!(warnings(&app, &school.admin, None, Some(b)).await.len(), 1);
    let _ = third;
}

async fn absences_in_a_row_follow_excuses_and_the_course_rule_wins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (a, b) = (school.students[0].as_str(), school.students[1].as_str());
    // The school-wide rule would warn everyone below 99 %; the course's own rule wins.
    app.gql_ok(
        Some(&school.admin),
        SET_RULE,
        json!({"i": {"minRate": 0.99}}),
    )
    .await;
    let own = app
        .gql_ok(
            Some(&school.teacher),
            SET_RULE,
            json!({"i": {"courseId": school.course_id, "consecutiveAbsences": 2}}),
        )
        .await;
    assert_eq!(own["setWarningRule"]["minRate"], Value::Null);
    assert_eq!(own["setWarningRule"]["afterSessions"], 1);

    held(&app, &school, &[b]).await;
    assert!(warnings(&app, &school.admin, None, None).await.is_empty());
    held(&app, &school, &[b]).await;
    let raised = warnings(&app, &school.admin, Some(&school.course_id), None).await;
    assert_eq!(
        raised.len(),
        1,
        "only A, only absences in a row: {raised:?}"
    );
    assert_eq!(raised[0]["student"]["id"], a);
    assert_eq!(raised[0]["kind"], "CONSECUTIVE_ABSENCES");
    assert_eq!(raised[0]["consecutiveAbsences"], 2);

    // An excuse turns both absences into permission: the run is broken, the warning clears.
    let excuse = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($i: CreateExcuseInput!) { createExcuse(input: $i) { id } }",
            json!({"i": {"studentId": a, "courseId": school.course_id, "from": app.today(), "to": app.today(), "reason": "doctor's note"}}),
        )
        .await["createExcuse"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        kinds(&warnings(&app, &school.admin, None, Some(a)).await),
        vec![("CONSECUTIVE_ABSENCES".into(), false)]
    );
    // Revoked, the absences are back: a new crossing.
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { revokeExcuse(id: $id) { id } }",
        json!({"id": excuse}),
    )
    .await;
    assert_eq!(
        kinds(&warnings(&app, &school.admin, None, Some(a)).await),
        vec![
            ("CONSECUTIVE_ABSENCES".into(), false),
            ("CONSECUTIVE_ABSENCES".into(), true)
        ]
    );

    // Without the course's rule, the school-wide one applies from the next change.
    let rules = app
        .gql_ok(
            Some(&school.teacher),
            "{ warningRules { id course { id } } }",
            json!({}),
        )
        .await;
    let own_id = rules["warningRules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| !r["course"].is_null())
        .unwrap()["id"]
        .clone();
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { deleteWarningRule(id: $id) }",
        json!({"id": own_id}),
    )
    .await;
    held(&app, &school, &[a, b]).await;
    let a_now = warnings(&app, &school.admin, None, Some(a)).await;
    assert_eq!(a_now[0]["kind"], "LOW_RATE", "{a_now:?}");
    assert_eq!(a_now[0]["rate"].as_f64().unwrap(), 1.0 / 3.0);
    assert!(
        warnings(&app, &school.admin, None, Some(b))
            .await
            .is_empty()
    );
}

async fn who_sets_rules_and_sees_warnings(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let refused = |body: &Value, code: &str, field: Option<&str>| {
        assert_eq!(error_code(body), code, "{body}");
        if let Some(field) = field {
            assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
        }
    };
    for (input, field) in [
        (json!({"minRate": 1.5}), "minRate"),
        (json!({"minRate": -0.1}), "minRate"),
        (json!({"consecutiveAbsences": 0}), "consecutiveAbsences"),
        (
            json!({"minRate": 0.5, "afterSessions": -1}),
            "afterSessions",
        ),
        (json!({}), "minRate"),
        (json!({"courseId": "999999", "minRate": 0.5}), "courseId"),
    ] {
        let body = app
            .gql(Some(&school.admin), SET_RULE, json!({"i": input}))
            .await;
        refused(&body, "BAD_USER_INPUT", Some(field));
    }
    assert!(
        app.gql_ok(Some(&school.admin), "{ warningRules { id } }", json!({}))
            .await["warningRules"]
            .as_array()
            .unwrap()
            .is_empty(),
        "bad input changes nothing"
    );
    // Teachers set their own course's rule, never the school's or another teacher's course.
    let body = app
        .gql(
            Some(&school.teacher),
            SET_RULE,
            json!({"i": {"minRate": 0.5}}),
        )
        .await;
    refused(&body, "FORBIDDEN", None);
    let body = app
        .gql(
            Some(&school.teacher),
            SET_RULE,
            json!({"i": {"courseId": school.other_course_id, "minRate": 0.5}}),
        )
        .await;
    assert!(body["errors"].is_array(), "{body}");
    // Setting again replaces the rule instead of adding one.
    for rate in [0.5, 0.7] {
        app.gql_ok(
            Some(&school.teacher),
            SET_RULE,
            json!({"i": {"courseId": school.course_id, "minRate": rate}}),
        )
        .await;
    }
    let rules = app
        .gql_ok(
            Some(&school.admin),
            "{ warningRules { minRate } }",
            json!({}),
        )
        .await;
    assert_eq!(rules["warningRules"], json!([{"minRate": 0.7}]));

    // A's warning is visible to the course's teacher and admins, not to another teacher.
    held(&app, &school, &[]).await;
    assert_eq!(warnings(&app, &school.teacher, None, None).await.len(), 2);
    assert_eq!(warnings(&app, &school.admin, None, None).await.len(), 2);
    assert!(
        warnings(&app, &school.other_teacher, None, None)
            .await
            .is_empty()
    );
    // A student with a warning is history: deleting them is refused.
    let body = app
        .gql(
            Some(&school.admin),
            "mutation($id: ID!) { deleteStudent(id: $id) }",
            json!({"id": school.students[0]}),
        )
        .await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
}

/// The statements of closing a session of `n` students with a rule and a webhook set. The
/// webhook takes record changes only, so the close writes no delivery and the worker stays
/// asleep (the outbox insert is one statement per 500 events, see `webhooks.rs`).
async fn statements_of_a_close(backend: Backend, n: usize) -> u64 {
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("WEBHOOK_ALLOW_PRIVATE".into(), "true".into());
    })
    .await;
    let school = app.seed_school(n).await;
    app.gql_ok(
        Some(&school.admin),
        SET_RULE,
        json!({"i": {"minRate": 0.9, "consecutiveAbsences": 1}}),
    )
    .await;
    app.gql_ok(
        Some(&school.admin),
        "mutation { createWebhook(input: {url: \"http://127.0.0.1:9/never\", events: [RECORD_CHANGED]}) { secret } }",
        json!({}),
    )
    .await;
    let (session, _) = app
        .open_session_and_scan(&school, &school.students[0])
        .await;
    let before = app.statements.get();
    app.close_session(&school.teacher, &session).await;
    let used = app.statements.get() - before;
    // Every absentee crossed both lines.
    assert_eq!(
        warnings(&app, &school.admin, None, None).await.len(),
        2 * (2 * n - 1)
    );
    used
}

async fn a_close_with_rules_and_webhooks_costs_the_same_statements_for_any_roster(
    backend: Backend,
) {
    // The webhook worker also reads the database in the background; the fewest
    // statements of a few runs is the close's own count.
    let mut small = u64::MAX;
    let mut large = u64::MAX;
    for _ in 0..3 {
        small = small.min(statements_of_a_close(backend, 2).await);
        large = large.min(statements_of_a_close(backend, 12).await);
        if small == large {
            break;
        }
    }
    assert_eq!(
        small, large,
        "2 or 12 per section, the close's statements are the same"
    );
}
