//! The command queue: rosters queued for a terminal, handed out on its polls, and the
//! results it reports.

use serde_json::{Value, json};

use super::SN;
use crate::both_databases;
use crate::common::*;

both_databases!(polls_hand_out_roster_commands_and_results_are_recorded,);

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
