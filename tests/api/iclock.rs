//! ZKTeco push terminals (iclock): the requests a real terminal makes, replayed byte for
//! byte (`\r\n` line ends, `ATTLOG\t` prefixes, blank lines), against both databases.

use std::time::Instant;

use chrono::{DateTime, Duration, Timelike, Utc};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    an_unknown_terminal_waits_for_approval_then_handshakes_with_its_stamps,
    uploads_take_good_lines_count_duplicates_and_keep_bad_lines,
    resent_uploads_change_nothing,
    a_late_batch_turns_an_automatic_absence_into_present,
    polls_hand_out_roster_commands_and_results_are_recorded,
    a_revoked_terminal_is_refused_until_approved_again,
    ten_thousand_lines_are_taken_in_one_request,
    pending_lines_left_by_a_stopped_server_are_judged_later,
);

const SN: &str = "CKUT201960123";

/// Waits (a minute at most) until no uploaded line is pending.
async fn wait_until_judged(app: &TestApp) {
    for _ in 0..600 {
        let pending = app
            .count("SELECT COUNT(*) FROM terminal_punch WHERE outcome = 'pending'")
            .await;
        if pending == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("pending lines were not judged within a minute");
}

/// A zone whose local date is today's UTC date for the next hours, with an offset of
/// three hours either way, so local times really are converted.
fn terminal_zone() -> (&'static str, i64) {
    if Utc::now().hour() < 12 {
        ("Africa/Addis_Ababa", 3)
    } else {
        ("America/Sao_Paulo", -3)
    }
}

/// `YYYY-MM-DD HH:MM:SS` of `at` on a terminal `offset` hours from UTC.
fn local(at: DateTime<Utc>, offset: i64) -> String {
    (at + Duration::hours(offset))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// One attendance line as firmware writes it: PIN, time, status, verify (15 = face),
/// work code and reserved fields, tab-separated, ended with `\r\n`.
fn attlog(pin: &str, time: &str) -> String {
    format!("{pin}\t{time}\t0\t15\t0\t0\t0\t0\t0\t0\r\n")
}

impl TestApp {
    /// A terminal's GET: status and body.
    async fn iclock_get(&self, path: &str) -> (u16, String) {
        let res = self
            .client
            .get(format!("{}{path}", self.address))
            .header("User-Agent", "iClock Proxy/1.09")
            .send()
            .await
            .expect("iclock GET");
        let status = res.status().as_u16();
        if status == 200 {
            let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(content_type.starts_with("text/plain"), "{content_type}");
        }
        (status, res.text().await.expect("body"))
    }

    /// A terminal's POST of a `text/plain` body: status and body.
    async fn iclock_post(&self, path: &str, body: impl Into<String>) -> (u16, String) {
        let res = self
            .client
            .post(format!("{}{path}", self.address))
            .header("User-Agent", "iClock Proxy/1.09")
            .header("Content-Type", "text/plain")
            .body(body.into())
            .send()
            .await
            .expect("iclock POST");
        let status = res.status().as_u16();
        (status, res.text().await.expect("body"))
    }

    /// The handshake of terminal `sn`.
    async fn handshake(&self, sn: &str) -> (u16, String) {
        self.iclock_get(&format!(
            "/iclock/cdata?SN={sn}&options=all&pushver=2.4.1&language=69&pushcommkey=0"
        ))
        .await
    }

    /// An ATTLOG upload of terminal `sn`.
    async fn upload(&self, sn: &str, stamp: u32, body: impl Into<String>) -> (u16, String) {
        self.iclock_post(
            &format!("/iclock/cdata?SN={sn}&table=ATTLOG&Stamp={stamp}"),
            body,
        )
        .await
    }

    /// Makes terminal `sn` known (its first handshake), approves it in `zone`, and returns
    /// its device row id and code.
    async fn approve_terminal(&self, admin: &str, sn: &str, zone: &str) -> (String, String) {
        let (status, _) = self.handshake(sn).await;
        assert_eq!(status, 403, "an unknown terminal is refused");
        let data = self
            .gql_ok(
                Some(admin),
                "{ terminals(approval: PENDING) { id serialNumber } }",
                json!({}),
            )
            .await;
        let id = data["terminals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["serialNumber"] == sn)
            .expect("pending terminal")["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let approved = self
            .gql_ok(
                Some(admin),
                "mutation($id: ID!, $z: String) { approveTerminal(id: $id, timeZone: $z) { deviceId approval isActive } }",
                json!({"id": id, "z": zone}),
            )
            .await;
        assert_eq!(approved["approveTerminal"]["approval"], "APPROVED");
        let code = approved["approveTerminal"]["deviceId"]
            .as_str()
            .unwrap()
            .to_owned();
        (id, code)
    }

    /// Opens a session of the school's course on `device` starting at midnight, so any
    /// time of today up to now falls inside it; returns its id.
    async fn open_on(&self, school: &School, device: &str) -> String {
        let data = self
            .gql_ok(
                Some(&school.teacher),
                "mutation($i: CreateSessionInput!) { createSession(input: $i) { id } }",
                json!({"i": {"courseId": school.course_id, "deviceId": device, "startTime": "00:00:00"}}),
            )
            .await;
        data["createSession"]["id"].as_str().unwrap().to_owned()
    }

    async fn terminal_health(&self, admin: &str, id: &str) -> Value {
        self.gql_ok(
            Some(admin),
            "query($id: ID!) { terminal(id: $id) { serialNumber approval isActive timeZone effectiveTimeZone \
             firmwareVersion pushVersion lastContactAt online recordsAccepted recordsDuplicate \
             recordsRejected stamps { table stamp } } }",
            json!({"id": id}),
        )
        .await["terminal"]
            .clone()
    }

    async fn rejected_lines(&self, admin: &str, id: &str) -> Vec<Value> {
        self.gql_ok(
            Some(admin),
            "query($id: ID) { terminalRejectedLines(terminalId: $id, first: 100) { totalCount edges { node { pin time line reason message } } } }",
            json!({"id": id}),
        )
        .await["terminalRejectedLines"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect()
    }

    async fn student_codes(&self, admin: &str, ids: &[String]) -> Vec<String> {
        let mut codes = Vec::new();
        for id in ids {
            let data = self
                .gql_ok(
                    Some(admin),
                    "query($id: ID!) { student(id: $id) { studentCode } }",
                    json!({"id": id}),
                )
                .await;
            codes.push(data["student"]["studentCode"].as_str().unwrap().to_owned());
        }
        codes
    }
}

async fn an_unknown_terminal_waits_for_approval_then_handshakes_with_its_stamps(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;

    // Unknown: recorded as pending, and every request is refused.
    let (status, body) = app.handshake(SN).await;
    assert_eq!(status, 403);
    assert!(body.contains("TERMINAL_NOT_APPROVED"), "{body}");
    let (status, _) = app
        .iclock_get(&format!(
            "/iclock/getrequest?SN={SN}&INFO=Ver%208.0.4.2-20170911,4,0,23,192.168.1.201,10,7,15,0,111"
        ))
        .await;
    assert_eq!(status, 403);
    let (status, _) = app.upload(SN, 1, attlog("1", "2025-11-25 08:00:00")).await;
    assert_eq!(status, 403);
    assert_eq!(app.count("SELECT COUNT(*) FROM terminal_punch").await, 0);
    let pending = app
        .gql_ok(
            Some(&admin),
            "{ terminals { id serialNumber approval isActive pushVersion firmwareVersion online } }",
            json!({}),
        )
        .await;
    let terminal = &pending["terminals"][0];
    assert_eq!(terminal["serialNumber"], SN);
    assert_eq!(terminal["approval"], "PENDING");
    assert_eq!(terminal["isActive"], false);
    assert_eq!(terminal["pushVersion"], "2.4.1");
    assert_eq!(terminal["firmwareVersion"], "Ver 8.0.4.2-20170911");
    assert_eq!(terminal["online"], true, "a pending terminal is still seen");
    let id = terminal["id"].as_str().unwrap().to_owned();
    // A pending terminal cannot be bound to a session.
    let school = app.seed_school(1).await;
    let open = app
        .gql(
            Some(&school.teacher),
            "mutation($i: CreateSessionInput!) { createSession(input: $i) { id } }",
            json!({"i": {"courseId": school.course_id, "deviceId": SN}}),
        )
        .await;
    assert_eq!(error_code(&open), "NOT_FOUND");

    // A bad zone is refused and changes nothing.
    let bad = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { approveTerminal(id: $id, timeZone: \"Mars/Olympus\") { id } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT");
    app.gql_ok(
        Some(&admin),
        "mutation($id: ID!) { approveTerminal(id: $id, name: \"Room 4\", timeZone: \"Africa/Addis_Ababa\") { id } }",
        json!({"id": id}),
    )
    .await;

    let (status, body) = app.handshake(SN).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(
            "GET OPTION FROM: {SN}\nATTLOGStamp=0\nOPERLOGStamp=0\nErrorDelay=30\nDelay=10\n\
             TransTimes=00:00;14:05\nTransInterval=1\nTransFlag=TransData AttLog OpLog\n\
             TimeZone=3\nRealtime=1\nEncrypt=None\n"
        )
    );

    // Stamps advance with each stored upload, per table.
    let (status, body) = app.upload(SN, 9001, "").await;
    assert_eq!((status, body.as_str()), (200, "OK: 0"));
    let (status, body) = app
        .iclock_post(
            &format!("/iclock/cdata?SN={SN}&table=OPERLOG&Stamp=512"),
            "OPLOG 4\t0\t2025-11-25 08:00:00\t0\t0\t0\t0\r\nUSER PIN=1\tName=A\r\n",
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, body) = app
        .iclock_post(
            &format!("/iclock/cdata?SN={SN}&table=options"),
            "~DeviceName=SpeedFace-V5L,FWVersion=Ver 6.60 Apr 28 2017,IPAddress=10.0.0.9\r\n",
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, body) = app
        .iclock_post(
            &format!("/iclock/cdata?SN={SN}&table=ATTPHOTO&Stamp=77"),
            "PIN=1\nSN=x\nsize=3\nCMD=uploadphoto\n\0\0\0",
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (_, body) = app.handshake(SN).await;
    assert!(
        body.contains("\nATTLOGStamp=9001\nOPERLOGStamp=512\n"),
        "{body}"
    );
    app.upload(SN, 9050, "").await;
    let (_, body) = app.handshake(SN).await;
    assert!(body.contains("\nATTLOGStamp=9050\n"), "{body}");

    let health = app.terminal_health(&admin, &id).await;
    assert_eq!(health["approval"], "APPROVED");
    assert_eq!(health["isActive"], true);
    assert_eq!(health["timeZone"], "Africa/Addis_Ababa");
    assert_eq!(health["effectiveTimeZone"], "Africa/Addis_Ababa");
    assert_eq!(health["firmwareVersion"], "Ver 6.60 Apr 28 2017");
    assert_eq!(health["online"], true);
    assert!(health["lastContactAt"].is_string());
    assert_eq!(
        health["stamps"],
        json!([{"table": "ATTLOG", "stamp": 9050}, {"table": "OPERLOG", "stamp": 512}])
    );

    // Restoring the default zone shows in the handshake (the test server runs in UTC).
    app.gql_ok(
        Some(&admin),
        "mutation($id: ID!) { setTerminalTimeZone(id: $id, timeZone: null) { timeZone } }",
        json!({"id": id}),
    )
    .await;
    let (_, body) = app.handshake(SN).await;
    assert!(body.contains("\nTimeZone=0\n"), "{body}");

    // Requests without a usable serial number are refused and record nothing.
    let (status, _) = app.iclock_get("/iclock/cdata?options=all").await;
    assert_eq!(status, 422);
    let (status, _) = app.iclock_get("/iclock/getrequest?SN=bad%0Aserial").await;
    assert_eq!(status, 422);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM device WHERE serial_number IS NOT NULL")
            .await,
        1
    );
}

async fn uploads_take_good_lines_count_duplicates_and_keep_bad_lines(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let leading_zeros = app
        .create_student(&school.admin, "00420", &school.sections[0])
        .await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    let session = app.open_on(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    let at = Utc::now() - Duration::minutes(5);
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
    let first = records
        .iter()
        .find(|r| r["studentId"] == school.students[0].as_str())
        .unwrap();
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
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    app.open_on(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    let at = Utc::now() - Duration::minutes(3);
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
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let (zone, offset) = terminal_zone();
    let (_, code) = app.approve_terminal(&school.admin, SN, zone).await;
    let session = app.open_on(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    let during = Utc::now() - Duration::seconds(5);
    let closed = app
        .gql_ok(
            Some(&school.teacher),
            "mutation($id: ID!) { closeSession(id: $id) { markedAbsent } }",
            json!({"id": session}),
        )
        .await;
    assert_eq!(closed["closeSession"]["markedAbsent"], 4);

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
    let record = data["session"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["studentId"] == school.students[0].as_str())
        .unwrap()
        .clone();
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

async fn polls_hand_out_roster_commands_and_results_are_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let (id, _) = app.approve_terminal(&school.admin, SN, "UTC").await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    let poll = format!("/iclock/getrequest?SN={SN}");
    assert_eq!(app.iclock_get(&poll).await, (200, "OK".to_owned()));

    let queued = app
        .gql_ok(
            Some(&school.admin),
            "mutation($t: ID!, $s: ID!) { pushSectionToTerminal(terminalId: $t, sectionId: $s) { id command status } }",
            json!({"t": id, "s": school.sections[0]}),
        )
        .await["pushSectionToTerminal"]
        .clone();
    let queued = queued.as_array().unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0]["status"], "QUEUED");
    let removal = app
        .gql_ok(
            Some(&school.admin),
            "mutation($t: ID!) { removeStudentFromTerminal(terminalId: $t, studentCode: \"0099\") { id command } }",
            json!({"t": id}),
        )
        .await["removeStudentFromTerminal"]
        .clone();
    assert_eq!(removal["command"], "DATA DELETE USERINFO PIN=0099");
    let bad = app
        .gql(
            Some(&school.admin),
            "mutation($t: ID!) { removeStudentFromTerminal(terminalId: $t, studentCode: \"1\\tName=x\\nC:9:Shell\") { id } }",
            json!({"t": id}),
        )
        .await;
    assert_eq!(
        error_code(&bad),
        "BAD_USER_INPUT",
        "no smuggled fields or commands"
    );
    let not_a_terminal = app
        .gql(
            Some(&school.admin),
            "mutation($t: ID!, $s: ID!) { pushSectionToTerminal(terminalId: $t, sectionId: $s) { id } }",
            json!({"t": school.device_row_id, "s": school.sections[0]}),
        )
        .await;
    assert_eq!(error_code(&not_a_terminal), "NOT_FOUND");

    let ids: Vec<&str> = queued
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .chain([removal["id"].as_str().unwrap()])
        .collect();
    let (status, body) = app.iclock_get(&poll).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(
            "C:{}:DATA UPDATE USERINFO PIN={}\tName=S {}\nC:{}:DATA UPDATE USERINFO PIN={}\tName=S {}\nC:{}:DATA DELETE USERINFO PIN=0099\n",
            ids[0], codes[0], codes[0], ids[1], codes[1], codes[1], ids[2]
        )
    );
    assert_eq!(
        app.iclock_get(&poll).await,
        (200, "OK".to_owned()),
        "handed out once"
    );

    // Results come back; a second terminal cannot answer for the first.
    let other = "OTHER0001";
    app.approve_terminal(&school.admin, other, "UTC").await;
    let (status, reply) = app
        .iclock_post(
            &format!("/iclock/devicecmd?SN={other}"),
            format!("ID={}&Return=0&CMD=DATA\r\n", ids[2]),
        )
        .await;
    assert_eq!((status, reply.as_str()), (200, "OK"));
    let (status, reply) = app
        .iclock_post(
            &format!("/iclock/devicecmd?SN={SN}"),
            format!(
                "ID={}&Return=0&CMD=DATA\r\nID={}&Return=-1002&CMD=DATA\r\n",
                ids[0], ids[1]
            ),
        )
        .await;
    assert_eq!((status, reply.as_str()), (200, "OK"));

    let data = app
        .gql_ok(
            Some(&school.admin),
            "query($t: ID!) { terminalCommands(terminalId: $t) { totalCount edges { node { id status returnCode reply attempts sentAt returnedAt createdBy { username } } } } }",
            json!({"t": id}),
        )
        .await;
    let nodes: Vec<Value> = data["terminalCommands"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    assert_eq!(data["terminalCommands"]["totalCount"], 3);
    let statuses: Vec<(&str, &Value)> = nodes
        .iter()
        .map(|n| (n["status"].as_str().unwrap(), &n["returnCode"]))
        .collect();
    assert_eq!(
        statuses,
        [
            ("SUCCEEDED", &json!(0)),
            ("FAILED", &json!(-1002)),
            ("SENT", &Value::Null)
        ]
    );
    assert_eq!(nodes[0]["reply"], "DATA");
    assert_eq!(nodes[0]["attempts"], 1);
    assert!(nodes[0]["returnedAt"].is_string());
    assert_eq!(nodes[0]["createdBy"]["username"], ADMIN_USER);
}

async fn a_revoked_terminal_is_refused_until_approved_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    app.open_on(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!) { revokeDevice(id: $id) { isActive } }",
        json!({"id": id}),
    )
    .await;

    let line = attlog(&codes[0], &local(Utc::now(), offset));
    assert_eq!(app.handshake(SN).await.0, 403);
    assert_eq!(
        app.iclock_get(&format!("/iclock/getrequest?SN={SN}"))
            .await
            .0,
        403
    );
    assert_eq!(app.upload(SN, 5, line.clone()).await.0, 403);
    assert_eq!(
        app.iclock_post(
            &format!("/iclock/devicecmd?SN={SN}"),
            "ID=1&Return=0&CMD=DATA\r\n"
        )
        .await
        .0,
        403
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM terminal_punch").await, 0);
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!) { approveTerminal(id: $id) { isActive } }",
        json!({"id": id}),
    )
    .await;
    let (_, handshake) = app.handshake(SN).await;
    assert!(
        handshake.contains("ATTLOGStamp=0"),
        "a refused upload stored no stamp"
    );
    assert_eq!(app.upload(SN, 5, line).await, (200, "OK: 1".to_owned()));
}

async fn ten_thousand_lines_are_taken_in_one_request(backend: Backend) {
    // A small general limit proves the terminals' routes have their own.
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("MAX_BODY_BYTES".into(), "65536".into());
    })
    .await;
    let school = app.seed_school(10).await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    app.open_on(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    assert_eq!(codes.len(), 20);

    // 500 seconds of a busy door: every student seen every second, one line each.
    let start = Utc::now() - Duration::seconds(600);
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
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    let session = app.open_on(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    // A server stored a large upload's tail as pending and stopped before judging it.
    let time = local(Utc::now() - Duration::seconds(30), offset);
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
