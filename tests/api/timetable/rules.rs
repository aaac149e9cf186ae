//! The timetable's rules: term and holiday dates, slot times and overlaps, a device busy at
//! a class's opening, manual sessions beside timetable ones, and who may do what.

use serde_json::{Value, json};

use super::{at, create_term, wait_for};
use crate::both_databases;
use crate::common::*;

both_databases!(
    terms_and_holidays_refuse_dates_out_of_order,
    slots_refuse_overlaps_of_a_device_or_a_teacher,
    a_busy_device_keeps_its_class_from_opening_and_says_so,
    listings_cost_a_constant_number_of_statements,
    the_scheduler_s_statements_are_not_counted_as_a_request_s,
);

const CREATE: &str = "mutation($i: CreateScheduleSlotInput!) { createScheduleSlot(input: $i) { id weekday startTime endTime } }";

fn slot(course: &str, term: &str, device: &str, day: &str, from: &str, to: &str) -> Value {
    json!({"i": {"courseId": course, "termId": term, "deviceId": device, "weekday": day,
                 "startTime": from, "endTime": to}})
}

async fn terms_and_holidays_refuse_dates_out_of_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = Some(school.admin.as_str());
    let reversed = app
        .gql(
            admin,
            "mutation { createTerm(input: {name: \"Backwards\", startsOn: \"2027-06-30\", endsOn: \"2027-03-01\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        (
            error_code(&reversed),
            reversed["errors"][0]["extensions"]["field"].as_str()
        ),
        ("BAD_USER_INPUT", Some("endsOn"))
    );
    let term = create_term(&app, &school.admin, "Spring", "2027-03-01", "2027-06-30").await;
    let taken = app
        .gql(
            admin,
            "mutation { createTerm(input: {name: \"Spring\", startsOn: \"2027-09-01\", endsOn: \"2027-12-31\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&taken), "CONFLICT");
    for (from, to, field) in [
        ("2027-02-27", "2027-03-02", "startsOn"),
        ("2027-06-29", "2027-07-02", "endsOn"),
        ("2027-04-10", "2027-04-01", "endsOn"),
    ] {
        let body = app
            .gql(
                admin,
                "mutation($t: ID!, $f: Date!, $e: Date) { addHoliday(input: {termId: $t, startsOn: $f, endsOn: $e, name: \"Break\"}) { id } }",
                json!({"t": term, "f": from, "e": to}),
            )
            .await;
        assert_eq!(
            (
                error_code(&body),
                body["errors"][0]["extensions"]["field"].as_str()
            ),
            ("BAD_USER_INPUT", Some(field)),
            "{from}..{to}: {body}"
        );
    }
    let one_day = app
        .gql_ok(
            admin,
            "mutation($t: ID!) { addHoliday(input: {termId: $t, startsOn: \"2027-04-05\", name: \"Easter Monday\"}) { id startsOn endsOn } }",
            json!({"t": term}),
        )
        .await;
    assert_eq!(one_day["addHoliday"]["endsOn"], "2027-04-05");
    // The term cannot shrink past its holiday.
    let shrink = app
        .gql(
            admin,
            "mutation($t: ID!) { updateTerm(id: $t, input: {endsOn: \"2027-04-01\"}) { id } }",
            json!({"t": term}),
        )
        .await;
    assert_eq!(error_code(&shrink), "BAD_USER_INPUT");
    let terms = app
        .gql_ok(
            Some(&school.teacher),
            "{ terms { name startsOn endsOn holidays { name startsOn } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        terms["terms"],
        json!([{"name": "Spring", "startsOn": "2027-03-01", "endsOn": "2027-06-30",
                "holidays": [{"name": "Easter Monday", "startsOn": "2027-04-05"}]}])
    );
    let removed = app
        .gql_ok(
            admin,
            "mutation($h: ID!) { removeHoliday(id: $h) }",
            json!({"h": one_day["addHoliday"]["id"]}),
        )
        .await;
    assert_eq!(removed["removeHoliday"], true);
}

async fn slots_refuse_overlaps_of_a_device_or_a_teacher(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();
    app.register_device(admin, "DEV-02").await;
    let (_, _) = app.register_device(admin, "DEV-03").await;
    let spring = create_term(&app, admin, "Spring", "2027-03-01", "2027-06-30").await;
    let autumn = create_term(&app, admin, "Autumn", "2027-09-01", "2027-12-31").await;
    let course = &school.course_id;
    let other = &school.other_course_id;

    let first = app
        .gql_ok(
            Some(admin),
            CREATE,
            slot(course, &spring, "DEV-01", "MONDAY", "08:00:00", "09:30:00"),
        )
        .await;
    let first_id = first["createScheduleSlot"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Same device, overlapping time: refused, naming the slot.
    let clash = app
        .gql(
            Some(admin),
            CREATE,
            slot(other, &spring, "DEV-01", "MONDAY", "09:00:00", "10:00:00"),
        )
        .await;
    assert_eq!(
        (error_code(&clash), error_reason(&clash)),
        ("CONFLICT", "SLOT_OVERLAP")
    );
    let message = clash["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("slot {first_id}")), "{message}");
    assert!(message.contains("same device"), "{message}");
    // Same teacher on another device, overlapping time: refused.
    let teacher = app
        .gql(
            Some(admin),
            CREATE,
            slot(course, &spring, "DEV-02", "MONDAY", "09:00:00", "10:00:00"),
        )
        .await;
    assert_eq!(error_reason(&teacher), "SLOT_OVERLAP");
    assert!(error_message(&teacher).contains("same teacher"));
    // Back to back, another day, another term, another teacher and device: all fine.
    for (course, term, device, day, from, to) in [
        (course, &spring, "DEV-01", "MONDAY", "09:30:00", "10:30:00"),
        (course, &spring, "DEV-01", "TUESDAY", "08:00:00", "09:30:00"),
        (course, &autumn, "DEV-01", "MONDAY", "08:00:00", "09:30:00"),
        (other, &spring, "DEV-03", "MONDAY", "08:00:00", "09:30:00"),
    ] {
        app.gql_ok(
            Some(admin),
            CREATE,
            slot(course, term, device, day, from, to),
        )
        .await;
    }
    // Bad input, an unknown device, an unknown course.
    let backwards = app
        .gql(
            Some(admin),
            CREATE,
            slot(course, &spring, "DEV-02", "FRIDAY", "10:00:00", "09:00:00"),
        )
        .await;
    assert_eq!(
        (
            error_code(&backwards),
            backwards["errors"][0]["extensions"]["field"].as_str()
        ),
        ("BAD_USER_INPUT", Some("endTime"))
    );
    let nowhere = app
        .gql(
            Some(admin),
            CREATE,
            slot(course, &spring, "DEV-99", "FRIDAY", "08:00:00", "09:00:00"),
        )
        .await;
    assert_eq!(error_code(&nowhere), "NOT_FOUND");
    let no_course = app
        .gql(
            Some(admin),
            CREATE,
            slot(
                "999999", &spring, "DEV-02", "FRIDAY", "08:00:00", "09:00:00",
            ),
        )
        .await;
    assert_eq!(
        (
            error_code(&no_course),
            no_course["errors"][0]["extensions"]["field"].as_str()
        ),
        ("BAD_USER_INPUT", Some("courseId"))
    );
    // Moving a slot onto another is refused too; moving it clear is fine.
    let moved = app
        .gql(
            Some(admin),
            "mutation($id: ID!) { updateScheduleSlot(id: $id, input: {weekday: TUESDAY}) { id } }",
            json!({"id": first_id}),
        )
        .await;
    assert_eq!(error_reason(&moved), "SLOT_OVERLAP");
    let moved = app
        .gql_ok(
            Some(admin),
            "mutation($id: ID!) { updateScheduleSlot(id: $id, input: {weekday: WEDNESDAY, startTime: \"13:00:00\", endTime: \"14:00:00\"}) { weekday startTime endTime } }",
            json!({"id": first_id}),
        )
        .await;
    assert_eq!(
        moved["updateScheduleSlot"],
        json!({"weekday": "WEDNESDAY", "startTime": "13:00:00", "endTime": "14:00:00"})
    );
    // A deleted slot frees its time.
    app.gql_ok(
        Some(admin),
        "mutation($id: ID!) { deleteScheduleSlot(id: $id) }",
        json!({"id": first_id}),
    )
    .await;
    app.gql_ok(
        Some(admin),
        CREATE,
        slot(
            other,
            &spring,
            "DEV-02",
            "WEDNESDAY",
            "13:00:00",
            "14:00:00",
        ),
    )
    .await;
    // The course and device with slots are not deleted.
    let kept = app
        .gql(
            Some(admin),
            "mutation($id: ID!) { deleteCourse(id: $id) }",
            json!({"id": other}),
        )
        .await;
    assert_eq!(error_reason(&kept), "IN_USE");
    // Teachers read their own slots, cancel their own classes only, and manage none.
    let mine = app
        .gql_ok(
            Some(&school.teacher),
            "{ scheduleSlots { course { code } } }",
            json!({}),
        )
        .await;
    assert!(
        mine["scheduleSlots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["course"]["code"] == "SE101")
    );
    let foreign = app
        .gql_ok(
            Some(admin),
            "{ scheduleSlots { id course { code } } }",
            json!({}),
        )
        .await["scheduleSlots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["course"]["code"] == "SE201")
        .unwrap()["id"]
        .clone();
    let refused = app
        .gql(
            Some(&school.teacher),
            "mutation($s: ID!) { cancelClass(slotId: $s, date: \"2027-03-01\") { status } }",
            json!({"s": foreign}),
        )
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
}

fn error_message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or("")
}

async fn a_busy_device_keeps_its_class_from_opening_and_says_so(backend: Backend) {
    let clock = Clock::manual(at("2027-03-01T07:00:00Z"));
    let app = TestApp::spawn_with_clock(backend, clock.clone(), |_| {}).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();
    let term = create_term(&app, admin, "Spring", "2027-03-01", "2027-06-30").await;
    app.gql_ok(
        Some(admin),
        CREATE,
        slot(
            &school.course_id,
            &term,
            "DEV-01",
            "MONDAY",
            "08:00:00",
            "09:00:00",
        ),
    )
    .await;
    // An extra class, opened by hand at 07:30 on the same device, runs past 08:00.
    clock.set(at("2027-03-01T07:30:00Z"));
    let manual = app
        .create_session(
            &school.other_teacher,
            json!({"courseId": school.other_course_id, "deviceId": "DEV-01", "durationMinutes": 60}),
        )
        .await;
    clock.set(at("2027-03-01T07:50:00Z"));
    wait_for(&app, "SELECT COUNT(*) FROM class_not_opened", 1).await;
    let run = app.service.run_schedule().await.expect("run");
    assert_eq!((run.opened, run.not_opened), (0, 0), "noted once");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("attendance_classes_not_opened_total{reason=\"device_busy\"} 1"),
        "{metrics}"
    );
    // Once the extra class is closed, the timetable's class opens (it has not ended).
    app.close_session(&school.other_teacher, &manual).await;
    clock.set(at("2027-03-01T08:10:00Z"));
    wait_for(
        &app,
        "SELECT COUNT(*) FROM attendance_session WHERE slot_id IS NOT NULL AND is_active = true",
        1,
    )
    .await;
    // While it is open, a manual session on its device is refused.
    let busy = app
        .gql(
            Some(&school.other_teacher),
            "mutation($c: ID!) { createSession(input: {courseId: $c, deviceId: \"DEV-01\"}) { id } }",
            json!({"c": school.other_course_id}),
        )
        .await;
    assert_eq!(
        (error_code(&busy), error_reason(&busy)),
        ("CONFLICT", "DEVICE_BUSY")
    );
}

async fn listings_cost_a_constant_number_of_statements(backend: Backend) {
    // Before any class of the day opens, so the scheduler has nothing to do.
    let clock = Clock::manual(at("2027-03-10T03:00:00Z"));
    let app = TestApp::spawn_with_clock(backend, clock, |_| {}).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();
    create_term(&app, admin, "Spring", "2027-03-01", "2027-06-30").await;
    // 40 devices x 5 days = 200 slots of the school's two teachers' courses, 20 per
    // teacher per day, half an hour apart so that no two of a teacher overlap.
    let mut csv = String::new();
    for n in 0..40 {
        let code = format!("WAVE-{n:02}");
        app.register_device(admin, &code).await;
        let course = if n % 2 == 0 { "SE101" } else { "SE201" };
        let start = 7 * 60 + (n / 2) * 30;
        let (from, to) = (
            format!("{:02}:{:02}", start / 60, start % 60),
            format!("{:02}:{:02}", (start + 25) / 60, (start + 25) % 60),
        );
        for day in ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"] {
            csv.push_str(&format!("{course},{code},{day},{from},{to}\n"));
        }
    }
    let imported = super::import(&app, admin, "Spring", &csv).await;
    assert_eq!(
        imported["data"]["importTimetable"]["created"], 200,
        "{imported}"
    );

    let mut costs = Vec::new();
    for (from, to) in [
        ("2027-03-08", "2027-03-08"),
        ("2027-03-08", "2027-03-14"),
        ("2027-03-01", "2027-05-31"),
    ] {
        for query in ["timetable", "attendanceNotTaken"] {
            let before = app.statements.get();
            let data = app
                .gql_ok(
                    Some(admin),
                    &format!("{{ {query}(from: \"{from}\", to: \"{to}\") {{ date status }} }}"),
                    json!({}),
                )
                .await;
            let cost = app.statements.get() - before;
            let listed = data[query].as_array().unwrap().len();
            costs.push((query, listed, cost));
        }
    }
    // The week lists 200 classes; the range grows a hundredfold, the statements do not.
    assert_eq!(costs[2].1, 200, "{costs:?}");
    for query in ["timetable", "attendanceNotTaken"] {
        let spent: Vec<u64> = costs
            .iter()
            .filter(|(q, _, _)| *q == query)
            .map(|(_, _, cost)| *cost)
            .collect();
        assert!(
            spent.iter().all(|c| *c == spent[0]) && spent[0] <= 8,
            "{query}: {costs:?}"
        );
    }
}

/// The statement counter measures requests; the scheduler and the webhook worker run on
/// their own rhythm beside them and must not land in whatever a test is measuring.
async fn the_scheduler_s_statements_are_not_counted_as_a_request_s(backend: Backend) {
    let clock = Clock::manual(at("2027-03-01T06:00:00Z"));
    let app = TestApp::spawn_with_clock(backend, clock.clone(), |env| {
        env.insert("SCHEDULE_OPEN_EARLY_MINUTES".into(), "0".into());
    })
    .await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();
    create_term(&app, admin, "Spring", "2027-03-01", "2027-06-30").await;
    let imported = super::import(&app, admin, "Spring", "SE101,DEV-01,MONDAY,08:00,09:00\n").await;
    assert_eq!(
        imported["data"]["importTimetable"]["created"], 1,
        "{imported}"
    );

    let before = app.statements.get();
    clock.set(at("2027-03-01T08:00:00Z"));
    // The wait's own reads are left out too, so only the scheduler could add to the count.
    attendance::db::background(wait_for(
        &app,
        "SELECT COUNT(*) FROM attendance_session WHERE slot_id IS NOT NULL",
        1,
    ))
    .await;
    assert_eq!(app.statements.get(), before);
    app.count("SELECT COUNT(*) FROM attendance_session").await;
    assert_eq!(
        app.statements.get(),
        before + 1,
        "a request's own read is counted"
    );
}
