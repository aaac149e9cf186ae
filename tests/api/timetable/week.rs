//! A school week on a clock the test moves: classes open and close themselves exactly once
//! with two server processes, across restarts; holidays and cancellations are respected; a
//! class that ended while the servers were down is MISSED, one still running is opened.

use serde_json::json;

use super::{at, create_term, import, wait_for};
use crate::both_databases;
use crate::common::*;

both_databases!(a_week_of_classes_opens_and_closes_itself_exactly_once);

const SLOT_SESSIONS: &str = "SELECT COUNT(*) FROM attendance_session WHERE slot_id IS NOT NULL";

fn on(date: &str, active: bool) -> String {
    format!(
        "SELECT COUNT(*) FROM attendance_session WHERE slot_id IS NOT NULL \
         AND date = '{date}' AND is_active = {}",
        if active { "true" } else { "false" }
    )
}

async fn a_week_of_classes_opens_and_closes_itself_exactly_once(backend: Backend) {
    // Monday 2027-03-01, early morning, in a school on UTC.
    let clock = Clock::manual(at("2027-03-01T06:00:00Z"));
    let app = TestApp::spawn_with_clock(backend, clock.clone(), |_| {}).await;
    let school = app.seed_school(2).await;
    let admin = school.admin.clone();
    app.register_device(&admin, "DEV-02").await;
    let term = create_term(&app, &admin, "Spring 2027", "2027-03-01", "2027-06-30").await;
    app.gql_ok(
        Some(&admin),
        "mutation($t: ID!) { addHoliday(input: {termId: $t, startsOn: \"2027-03-03\", name: \"Founders day\"}) { id } }",
        json!({"t": term}),
    )
    .await;
    let mut csv = String::from("course_code,device_id,weekday,start_time,end_time\n");
    for day in ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"] {
        csv.push_str(&format!("SE101,DEV-01,{day},08:00,09:00\n"));
        csv.push_str(&format!("SE201,DEV-02,{day},08:30,09:30\n"));
    }
    let imported = import(&app, &admin, "Spring 2027", &csv).await;
    assert_eq!(
        imported["data"]["importTimetable"]["created"], 10,
        "{imported}"
    );
    let slots = app
        .gql_ok(
            Some(&admin),
            "{ scheduleSlots { id weekday course { code } } }",
            json!({}),
        )
        .await;
    let friday_se101 = slots["scheduleSlots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["weekday"] == "FRIDAY" && s["course"]["code"] == "SE101")
        .unwrap()["id"]
        .clone();
    let cancelled = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($s: ID!) { cancelClass(slotId: $s, date: \"2027-03-05\", reason: \"exam\") { status cancellationReason } }",
            json!({"s": friday_se101}),
        )
        .await;
    assert_eq!(
        cancelled["cancelClass"],
        json!({"status": "CANCELLED", "cancellationReason": "exam"})
    );
    let sibling = app.spawn_sibling(|_| {}).await;

    // Monday: both classes open ten minutes early, once each, with two processes.
    clock.set(at("2027-03-01T07:50:00Z"));
    wait_for(&app, &on("2027-03-01", true), 1).await;
    let (status, body) = app
        .scan(
            &school.device_key,
            &school.students[0],
            "2027-03-01",
            "07:55:00",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    clock.set(at("2027-03-01T08:20:00Z"));
    wait_for(&app, &on("2027-03-01", true), 2).await;
    clock.set(at("2027-03-01T09:00:00Z"));
    wait_for(&app, &on("2027-03-01", false), 1).await;
    clock.set(at("2027-03-01T09:30:00Z"));
    wait_for(&app, &on("2027-03-01", false), 2).await;
    // Four students expected in SE101 (one scanned), one in SE201.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_record WHERE status = 'absent'")
            .await,
        4
    );

    // Tuesday: every server is down through the classes; they stay MISSED.
    sibling.stop().await;
    let app = app.restart(|| clock.set(at("2027-03-02T10:00:00Z"))).await;
    let run = app.service.run_schedule().await.expect("run");
    assert_eq!((run.opened, run.closed), (0, 0));
    assert_eq!(app.count(&on("2027-03-02", true)).await, 0);

    // Wednesday is a holiday.
    clock.set(at("2027-03-03T08:40:00Z"));
    let run = app.service.run_schedule().await.expect("run");
    assert_eq!(run.opened, 0);

    // Thursday: the servers come back mid-class and open what is still running, once.
    let app = app.restart(|| clock.set(at("2027-03-04T08:25:00Z"))).await;
    let sibling = app.spawn_sibling(|_| {}).await;
    wait_for(&app, &on("2027-03-04", true), 2).await;
    let (status, late) = sibling
        .scan(
            &school.device_key,
            &school.students[1],
            "2027-03-04",
            "08:25:00",
        )
        .await;
    assert_eq!(status, 201, "{late}");
    assert_eq!(late["late_minutes"], 25, "the class started at 08:00");
    clock.set(at("2027-03-04T09:30:00Z"));
    wait_for(&app, &on("2027-03-04", false), 2).await;

    // Friday: SE101 is cancelled; SE201 takes place.
    clock.set(at("2027-03-05T08:25:00Z"));
    wait_for(&app, &on("2027-03-05", true), 1).await;
    clock.set(at("2027-03-05T09:30:00Z"));
    wait_for(&app, &on("2027-03-05", false), 1).await;
    assert_eq!(app.count(SLOT_SESSIONS).await, 5, "each class once");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM (SELECT slot_id, date FROM attendance_session \
             WHERE slot_id IS NOT NULL GROUP BY slot_id, date HAVING COUNT(*) > 1) AS twice"
        )
        .await,
        0
    );

    let week = app
        .gql_ok(
            Some(&admin),
            "{ timetable(from: \"2027-03-01\", to: \"2027-03-07\") { date status startsAt slot { course { code } } session { id } } }",
            json!({}),
        )
        .await;
    let seen: Vec<(String, String, String)> = week["timetable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["date"].as_str().unwrap().to_owned(),
                c["slot"]["course"]["code"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("2027-03-01", "SE101", "CLOSED"),
        ("2027-03-01", "SE201", "CLOSED"),
        ("2027-03-02", "SE101", "MISSED"),
        ("2027-03-02", "SE201", "MISSED"),
        ("2027-03-03", "SE101", "HOLIDAY"),
        ("2027-03-03", "SE201", "HOLIDAY"),
        ("2027-03-04", "SE101", "CLOSED"),
        ("2027-03-04", "SE201", "CLOSED"),
        ("2027-03-05", "SE101", "CANCELLED"),
        ("2027-03-05", "SE201", "CLOSED"),
    ]
    .iter()
    .map(|(d, c, s)| (d.to_string(), c.to_string(), s.to_string()))
    .collect();
    assert_eq!(seen, expected);

    // Not taken: the two missed classes, and the classes that closed without a scan.
    let not_taken = app
        .gql_ok(
            Some(&admin),
            "{ attendanceNotTaken(from: \"2027-03-01\", to: \"2027-03-07\") { date status slot { course { code } } } }",
            json!({}),
        )
        .await;
    let not_taken: Vec<(String, String, String)> = not_taken["attendanceNotTaken"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["date"].as_str().unwrap().to_owned(),
                c["slot"]["course"]["code"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        not_taken,
        [
            ("2027-03-01", "SE201", "CLOSED"),
            ("2027-03-02", "SE101", "MISSED"),
            ("2027-03-02", "SE201", "MISSED"),
            ("2027-03-04", "SE201", "CLOSED"),
            ("2027-03-05", "SE201", "CLOSED"),
        ]
        .iter()
        .map(|(d, c, s)| (d.to_string(), c.to_string(), s.to_string()))
        .collect::<Vec<_>>()
    );
    // A teacher sees their own courses' classes only.
    let mine = app
        .gql_ok(
            Some(&school.other_teacher),
            "{ timetable(from: \"2027-03-01\", to: \"2027-03-07\") { slot { course { code } } } }",
            json!({}),
        )
        .await;
    assert_eq!(mine["timetable"].as_array().unwrap().len(), 5);
    sibling.stop().await;
}
