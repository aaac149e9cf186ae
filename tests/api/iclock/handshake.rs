//! The handshake and who may make it: an unknown terminal waits for an admin's approval,
//! a revoked one is refused every request until approved again.

use serde_json::json;

use super::{SN, attlog, local, spawn_on_clock, terminal_zone};
use crate::both_databases;
use crate::common::*;

both_databases!(
    an_unknown_terminal_waits_for_approval_then_handshakes_with_its_stamps,
    a_revoked_terminal_is_refused_until_approved_again,
);

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

async fn a_revoked_terminal_is_refused_until_approved_again(backend: Backend) {
    let app = spawn_on_clock(backend, |_| {}).await;
    let school = app.seed_school(1).await;
    let (zone, offset) = terminal_zone();
    let (id, code) = app.approve_terminal(&school.admin, SN, zone).await;
    app.open_session_from_midnight(&school, &code).await;
    let codes = app.student_codes(&school.admin, &school.students).await;
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!) { revokeDevice(id: $id) { isActive } }",
        json!({"id": id}),
    )
    .await;

    let line = attlog(&codes[0], &local(app.service.now(), offset));
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
