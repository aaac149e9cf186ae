//! Attendance uploads: lines taken, duplicates counted, bad lines kept for review,
//! resends ignored, late batches correcting absences, large uploads judged after the reply.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use sea_orm::ConnectionTrait;
use serde_json::json;

use super::{SN, attlog, local, spawn_on_clock, terminal_zone, wait_until_judged};
use crate::both_databases;
use crate::common::*;

both_databases!(
    uploads_take_good_lines_count_duplicates_and_keep_bad_lines,
    resent_uploads_change_nothing,
    a_late_batch_turns_an_automatic_absence_into_present,
    ten_thousand_lines_are_taken_in_one_request,
    pending_lines_left_by_a_stopped_server_are_judged_later,
    a_departed_student_is_refused_on_every_scan_path_and_never_marked_absent,
);

async fn uploads_take_good_lines_count_duplicates_and_keep_bad_lines(backend: Backend) {
    let app = spawn_on_clock(backend, |_| {}).await;
    let school = app.seed_school(2).await;
    let leading_zeros = app
        .create_student(&school.admin, "00420", &school.sections[0])
        .await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    let session = app.open_session_from_midnight(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    let at = app.service.now() - Duration::minutes(5);
    let (t0, t1, t2) = (
        local(at, offset),
        local(at + Duration::seconds(30), offset),
        local(at + Duration::seconds(60), offset),
    );

    let body = [
        attlog(&codes[0], &t0),
        format!("ATTLOG\t{}", attlog(&codes[1], &t0)),
        "\r\n".to_owned(),
        attlog(&codes[0], &t1), // the student is already recorded: a duplicate
        attlog(&codes[1], &t0), // the same line again
        attlog("00420", &t1),
        attlog("420", &t1), // leading zeros matter: no such student
        attlog("OUT001", &t1),
        attlog(&codes[2], "2025/11/25 08:00"),
        format!("\t{t2}\t0\t15\t0\t0\r\n"),
        "\r\n".to_owned(),
    ]
    .concat();
    let (status, reply) = app.upload(SN, 1000, body).await;
    assert_eq!(status, 200);
    assert_eq!(reply, "OK: 5", "2 new, 1 duplicate, 1 repeat, 1 more new");

    let data = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { records { studentId status scannedAt } } }",
            json!({"id": session}),
        )
        .await;
    let records = data["session"]["records"].as_array().unwrap();
    let mut students: Vec<&str> = records
        .iter()
        .map(|r| r["studentId"].as_str().unwrap())
        .collect();
    students.sort();
    let mut expected = vec![
        school.students[0].as_str(),
        school.students[1].as_str(),
        leading_zeros.as_str(),
    ];
    expected.sort();
    assert_eq!(students, expected);
    let first = student_record(&data["session"], &school.students[0]);
    assert_eq!(first["status"], "PRESENT");
    let scanned = DateTime::parse_from_rfc3339(first["scannedAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        scanned.timestamp(),
        at.timestamp(),
        "the time is read in the terminal's zone"
    );

    let rejected = app.rejected_lines(&school.admin, &id).await;
    let reasons: Vec<(&str, &str)> = rejected
        .iter()
        .map(|l| (l["pin"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("420", "STUDENT_NOT_FOUND"),
            ("OUT001", "STUDENT_NOT_IN_COURSE"),
            (codes[2].as_str(), "MALFORMED_LINE"),
            ("", "MALFORMED_LINE"),
        ]
    );
    assert_eq!(rejected[0]["time"], t1.as_str());
    assert_eq!(
        rejected[0]["line"],
        format!("420\t{t1}\t0\t15\t0\t0\t0\t0\t0\t0")
    );
    assert!(rejected[3]["message"].as_str().unwrap().contains("PIN"));

    let health = app.terminal_health(&school.admin, &id).await;
    assert_eq!(health["recordsAccepted"], 3);
    assert_eq!(health["recordsDuplicate"], 1);
    assert_eq!(health["recordsRejected"], 4);
    let (_, handshake) = app.handshake(SN).await;
    assert!(handshake.contains("\nATTLOGStamp=1000\n"), "{handshake}");

    // Lines with no session bound at their time are kept too.
    let (status, reply) = app
        .upload(SN, 1001, attlog(&codes[3], "2024-01-01 08:00:00"))
        .await;
    assert_eq!((status, reply.as_str()), (200, "OK: 0"));
    let rejected = app.rejected_lines(&school.admin, &id).await;
    assert_eq!(rejected.len(), 5);
    assert_eq!(rejected[4]["reason"], "SCAN_TOO_OLD");
}

async fn resent_uploads_change_nothing(backend: Backend) {
    let app = spawn_on_clock(backend, |_| {}).await;
    let school = app.seed_school(2).await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    app.open_session_from_midnight(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    let at = app.service.now() - Duration::minutes(3);
    let body = [
        attlog(&codes[0], &local(at, offset)),
        attlog(&codes[0], &local(at + Duration::seconds(5), offset)),
        attlog("NOPE", &local(at, offset)),
        attlog(&codes[1], &local(at, offset)),
    ]
    .concat();
    let (status, first) = app.upload(SN, 7, body.clone()).await;
    assert_eq!((status, first.as_str()), (200, "OK: 3"));
    let snapshot = || async {
        (
            app.count("SELECT COUNT(*) FROM attendance_record").await,
            app.count("SELECT COUNT(*) FROM terminal_punch").await,
            app.count("SELECT COUNT(*) FROM record_change").await,
        )
    };
    let before = snapshot().await;
    assert_eq!(before, (2, 4, 0));

    // The terminal did not get the reply and sends the same batch again, then a batch
    // that overlaps it.
    let (status, again) = app.upload(SN, 7, body.clone()).await;
    assert_eq!((status, again.as_str()), (200, "OK: 3"), "the same answer");
    assert_eq!(snapshot().await, before);
    let overlap = [
        attlog(&codes[1], &local(at, offset)),
        attlog(&codes[2], &local(at + Duration::seconds(9), offset)),
    ]
    .concat();
    let (_, reply) = app.upload(SN, 8, overlap).await;
    assert_eq!(reply, "OK: 2");
    assert_eq!(snapshot().await, (3, 5, 0));
    let health = app.terminal_health(&school.admin, &id).await;
    assert_eq!(
        (
            &health["recordsAccepted"],
            &health["recordsDuplicate"],
            &health["recordsRejected"]
        ),
        (&json!(3), &json!(1), &json!(1)),
        "resends are not counted twice"
    );
    assert_eq!(app.rejected_lines(&school.admin, &id).await.len(), 1);
}

async fn a_late_batch_turns_an_automatic_absence_into_present(backend: Backend) {
    let app = spawn_on_clock(backend, |_| {}).await;
    let school = app.seed_school(2).await;
    let (zone, offset) = terminal_zone();
    let (_, code) = app.approve_terminal(&school.admin, SN, zone).await;
    let session = app.open_session_from_midnight(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    let during = app.service.now() - Duration::seconds(5);
    assert_eq!(app.close_session(&school.teacher, &session).await, 4);

    // The terminal was offline during the class and uploads once it is back.
    let (status, reply) = app
        .upload(SN, 31, attlog(&codes[0], &local(during, offset)))
        .await;
    assert_eq!((status, reply.as_str()), (200, "OK: 1"));
    let data = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { counts { present absent } records { studentId status changes { oldStatus newStatus reason } } } }",
            json!({"id": session}),
        )
        .await;
    assert_eq!(
        data["session"]["counts"],
        json!({"present": 1, "absent": 3})
    );
    let record = student_record(&data["session"], &school.students[0]);
    assert_eq!(record["status"], "PRESENT");
    assert_eq!(record["changes"][0]["oldStatus"], "ABSENT");
    assert!(
        record["changes"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("buffered scan")
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM terminal_punch WHERE outcome = 'corrected'")
            .await,
        1
    );
}

async fn ten_thousand_lines_are_taken_in_one_request(backend: Backend) {
    // A small general limit proves the terminals' routes have their own.
    let app = spawn_on_clock(backend, |env| {
        env.insert("MAX_BODY_BYTES".into(), "65536".into());
    })
    .await;
    let school = app.seed_school(10).await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    app.open_session_from_midnight(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    assert_eq!(codes.len(), 20);

    // 500 seconds of a busy door: every student seen every second, one line each.
    let start = app.service.now() - Duration::seconds(600);
    let mut body = String::new();
    for second in 0..500 {
        let time = local(start + Duration::seconds(second), offset);
        for code in &codes {
            body.push_str("ATTLOG\t");
            body.push_str(&attlog(code, &time));
        }
    }
    assert_eq!(body.lines().count(), 10_000);
    assert!(body.len() > 65536);
    let began = Instant::now();
    let (status, reply) = app.upload(SN, 10_000, body.clone()).await;
    let answered = began.elapsed();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, "OK: 10000");
    // Whatever did not fit in the request's time budget is judged right after the reply.
    wait_until_judged(&app).await;
    let judged = began.elapsed();
    eprintln!(
        "iclock upload of 10000 lines on {backend:?}: answered in {:.2} s, all judged in {:.2} s ({:.0} lines/s)",
        answered.as_secs_f64(),
        judged.as_secs_f64(),
        10_000.0 / judged.as_secs_f64()
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_record").await,
        20
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM terminal_punch").await,
        10_000
    );
    let health = app.terminal_health(&school.admin, &id).await;
    assert_eq!(health["recordsAccepted"], 20);
    assert_eq!(health["recordsDuplicate"], 9_980);
    assert_eq!(health["recordsRejected"], 0);
    let first_scans = app
        .count(&format!(
            "SELECT COUNT(*) FROM terminal_punch WHERE outcome = 'accepted' AND punch_time = '{}'",
            local(start, offset)
        ))
        .await;
    assert_eq!(
        first_scans, 20,
        "each student's earliest line is the one recorded"
    );

    // The resend of the whole batch is cheap and changes nothing.
    let began = Instant::now();
    let (status, reply) = app.upload(SN, 10_000, body).await;
    eprintln!(
        "iclock resend of 10000 lines on {backend:?}: {:.2} s",
        began.elapsed().as_secs_f64()
    );
    assert_eq!((status, reply.as_str()), (200, "OK: 10000"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM terminal_punch").await,
        10_000
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_record").await,
        20
    );

    // Other routes keep the general limit.
    let big = format!("{{\"query\": \"{}\"}}", "x".repeat(70_000));
    let res = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
}

async fn pending_lines_left_by_a_stopped_server_are_judged_later(backend: Backend) {
    let app = spawn_on_clock(backend, |_| {}).await;
    let school = app.seed_school(1).await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    let session = app.open_session_from_midnight(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    // A server stored a large upload's tail as pending and stopped before judging it.
    let time = local(app.service.now() - Duration::seconds(30), offset);
    for (pin, line) in [
        (codes[0].as_str(), attlog(&codes[0], &time)),
        ("GHOST", attlog("GHOST", &time)),
    ] {
        app.service
            .db
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                app.service.db.get_database_backend(),
                if backend == Backend::Postgres {
                    "INSERT INTO terminal_punch (device_id, pin, punch_time, line, outcome, received_at) \
                     VALUES ($1, $2, $3, $4, 'pending', $5)"
                } else {
                    "INSERT INTO terminal_punch (device_id, pin, punch_time, line, outcome, received_at) \
                     VALUES (?, ?, ?, ?, 'pending', ?)"
                },
                [
                    id.parse::<i32>().unwrap().into(),
                    pin.into(),
                    time.clone().into(),
                    line.trim_end().to_owned().into(),
                    Utc::now().into(),
                ],
            ))
            .await
            .unwrap();
    }
    // The next server to start judges them.
    let restarted = app.spawn_sibling(|_| {}).await;
    wait_until_judged(&app).await;
    restarted.stop().await;
    let data = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { session(id: $id) { records { studentId status } } }",
            json!({"id": session}),
        )
        .await;
    assert_eq!(
        data["session"]["records"],
        json!([{"studentId": school.students[0], "status": "PRESENT"}])
    );
    let rejected = app.rejected_lines(&school.admin, &id).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reason"], "STUDENT_NOT_FOUND");
    let health = app.terminal_health(&school.admin, &id).await;
    assert_eq!(
        (&health["recordsAccepted"], &health["recordsRejected"]),
        (&json!(1), &json!(1))
    );
    // A resend afterwards finds them judged.
    let resend = [attlog(&codes[0], &time), attlog("GHOST", &time)].concat();
    assert_eq!(app.upload(SN, 3, resend).await, (200, "OK: 1".to_owned()));
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, 1);
}

/// A student who left keeps their history, is refused by the live endpoint, the GraphQL
/// scan, offline batches and terminal uploads alike, and is not marked absent any more.
async fn a_departed_student_is_refused_on_every_scan_path_and_never_marked_absent(
    backend: Backend,
) {
    let app = spawn_on_clock(backend, |_| {}).await;
    let school = app.seed_school(2).await;
    let admin = Some(school.admin.as_str());
    let (leaver, other_leaver) = (&school.students[0], &school.students[1]);
    let (first, _) = app.open_session_and_scan(&school, leaver).await;
    assert_eq!(app.close_session(&school.teacher, &first).await, 3);

    for id in [leaver, other_leaver] {
        let left = app
            .gql_ok(
                admin,
                "mutation($id: ID!) { setStudentActive(id: $id, active: false) { id isActive } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(left["setStudentActive"]["isActive"], false);
    }
    let lists = app
        .gql_ok(
            admin,
            "{ gone: students(active: false) { totalCount nodes { id } } \
               here: students(active: true) { totalCount } all: students { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(lists["gone"]["totalCount"], 2);
    assert_eq!(lists["here"]["totalCount"], 3);
    assert_eq!(lists["all"]["totalCount"], 5);

    // The live endpoint, REST and GraphQL (the session starts at midnight, so an offline
    // scan from a moment ago falls inside it too).
    let second = app
        .open_session_from_midnight(&school, &school.device_code)
        .await;
    let (status, body) = app.scan_now(&school, leaver).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("STUDENT_INACTIVE")),
        "{body}"
    );
    let body = app
        .gql(
            Some(&school.device_key),
            "mutation($i: ScanInput!) { scan(input: $i) { id } }",
            json!({"i": {"studentId": leaver, "date": app.today(), "time": app.now_time()}}),
        )
        .await;
    assert_eq!(
        (error_code(&body), error_reason(&body)),
        ("FORBIDDEN", "STUDENT_INACTIVE")
    );
    // An offline batch.
    let (today, now) = (app.today(), app.now_time());
    let (status, batch) = app
        .scan_batch(
            &school.device_key,
            &json!([
                {"student_id": other_leaver.parse::<i64>().unwrap(), "date": today, "time": now},
                {"student_id": school.students[2].parse::<i64>().unwrap(), "date": today, "time": now},
            ]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(batch["results"][0]["status"], "rejected", "{batch}");
    assert_eq!(batch["results"][0]["code"], "STUDENT_INACTIVE");
    assert_eq!(batch["results"][1]["status"], "accepted");

    // A terminal's upload.
    let (zone, offset) = terminal_zone();
    let (terminal, code) = app.approve_terminal(&school.admin, SN, zone).await;
    app.open_session_from_midnight(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    let at = app.service.now() - Duration::minutes(1);
    let (status, reply) = app
        .upload(
            SN,
            50,
            [
                attlog(&codes[0], &local(at, offset)),
                attlog(&codes[3], &local(at, offset)),
            ]
            .concat(),
        )
        .await;
    assert_eq!(
        (status, reply.as_str()),
        (200, "OK: 1"),
        "the leaver's line is not taken"
    );
    wait_until_judged(&app).await;
    let rejected = app.rejected_lines(&school.admin, &terminal).await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["pin"], codes[0].as_str());
    assert_eq!(rejected[0]["reason"], "STUDENT_INACTIVE");

    // The close expects only those still here: students[3] is absent, the leavers are not.
    let closed = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($id: ID!) { closeSession(id: $id) { markedAbsent session { records { studentId status } } } }",
            json!({"id": second}),
        )
        .await;
    assert_eq!(closed["closeSession"]["markedAbsent"], 1);
    let records = closed["closeSession"]["session"]["records"]
        .as_array()
        .unwrap();
    assert!(
        records
            .iter()
            .all(|r| r["studentId"] != leaver.as_str() && r["studentId"] != other_leaver.as_str()),
        "{records:?}"
    );
    // Their history stays.
    let history = app
        .gql_ok(
            admin,
            "query($s: ID!) { attendanceRecords(studentId: $s) { totalCount } }",
            json!({"s": other_leaver}),
        )
        .await;
    assert_eq!(history["attendanceRecords"]["totalCount"], 1);

    // Back again, they scan as before.
    app.gql_ok(
        admin,
        "mutation($id: ID!) { setStudentActive(id: $id, active: true) { isActive } }",
        json!({"id": leaver}),
    )
    .await;
    app.open_session_and_scan(&school, leaver).await;
}
