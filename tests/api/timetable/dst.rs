//! Daylight saving in a real zone: a class in the skipped hour opens at the first valid
//! instant; a class in the repeated hour opens once, at the first of the two.

use serde_json::json;

use super::{at, create_term, import, wait_for};
use crate::both_databases;
use crate::common::*;

both_databases!(classes_open_correctly_across_daylight_saving_changes);

const SESSIONS: &str = "SELECT COUNT(*) FROM attendance_session WHERE slot_id IS NOT NULL";

async fn classes_open_correctly_across_daylight_saving_changes(backend: Backend) {
    // Saturday evening before Berlin's spring-forward night (2027-03-28, 02:00 -> 03:00).
    let clock = Clock::manual(at("2027-03-27T20:00:00Z"));
    let app = TestApp::spawn_with_clock(backend, clock.clone(), |env| {
        env.insert("TIME_ZONE".into(), "Europe/Berlin".into());
        env.insert("SCHEDULE_OPEN_EARLY_MINUTES".into(), "0".into());
    })
    .await;
    let school = app.seed_school(1).await;
    let admin = school.admin.clone();
    create_term(&app, &admin, "2027", "2027-03-01", "2027-11-30").await;
    let imported = import(&app, &admin, "2027", "SE101,DEV-01,SUNDAY,02:30,03:30\n").await;
    assert_eq!(
        imported["data"]["importTimetable"]["created"], 1,
        "{imported}"
    );

    // 02:30 does not exist that night: the class opens at 03:00 CEST (01:00 UTC).
    clock.set(at("2027-03-28T00:59:00Z"));
    let run = app.service.run_schedule().await.expect("run");
    assert_eq!(run.opened, 0, "not before the first valid instant");
    assert_eq!(run.next_due, Some(at("2027-03-28T01:00:00Z")));
    clock.set(at("2027-03-28T01:00:00Z"));
    wait_for(&app, SESSIONS, 1).await;
    let spring = app
        .gql_ok(
            Some(&admin),
            "{ timetable(from: \"2027-03-28\", to: \"2027-03-28\") { status startsAt endsAt session { isActive } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        spring["timetable"][0],
        json!({"status": "OPEN", "startsAt": "2027-03-28T01:00:00+00:00",
               "endsAt": "2027-03-28T01:30:00+00:00", "session": {"isActive": true}})
    );
    clock.set(at("2027-03-28T01:30:00Z"));
    wait_for(
        &app,
        "SELECT COUNT(*) FROM attendance_session WHERE is_active = false",
        1,
    )
    .await;

    // 2027-10-31: 02:30 happens twice (CEST, then CET). The class opens at the first.
    clock.set(at("2027-10-31T00:29:00Z"));
    assert_eq!(app.service.run_schedule().await.expect("run").opened, 0);
    clock.set(at("2027-10-31T00:30:00Z"));
    wait_for(&app, SESSIONS, 2).await;
    let autumn = app
        .gql_ok(
            Some(&admin),
            "{ timetable(from: \"2027-10-31\", to: \"2027-10-31\") { status startsAt endsAt } }",
            json!({}),
        )
        .await;
    // It ends at 03:30 CET, the second hour's end: 02:30 UTC.
    assert_eq!(
        autumn["timetable"][0],
        json!({"status": "OPEN", "startsAt": "2027-10-31T00:30:00+00:00",
               "endsAt": "2027-10-31T02:30:00+00:00"})
    );
    // The second 02:30 (01:30 UTC) opens nothing more.
    clock.set(at("2027-10-31T01:30:00Z"));
    let run = app.service.run_schedule().await.expect("run");
    assert_eq!(run.opened, 0);
    assert_eq!(app.count(SESSIONS).await, 2);
    clock.set(at("2027-10-31T02:30:00Z"));
    wait_for(
        &app,
        "SELECT COUNT(*) FROM attendance_session WHERE is_active = false",
        2,
    )
    .await;
}
