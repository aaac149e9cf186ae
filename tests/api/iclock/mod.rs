//! ZKTeco push terminals (iclock): the requests a real terminal makes, replayed byte for
//! byte (`\r\n` line ends, `ATTLOG\t` prefixes, blank lines), against both databases.
//! One module per capability, as in `service::terminals`; the helpers a terminal's
//! requests need are here.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::common::*;

mod commands;
mod enrolment;
mod handshake;
mod uploads;

const SN: &str = "CKUT201960123";

/// Where the attendance clock of the tests that make sessions and lines stands: twenty
/// minutes past midnight UTC, the hour at which reading the wall clock failed them (a line
/// from minutes ago fell on the day before, ahead of the session that opens at midnight).
/// The clock stands still unless a test moves it, so the hour of a run no longer matters.
const CLOCK_AT: &str = "2027-03-01T00:20:00Z";

/// A server over a fresh database whose attendance time is a manual clock at [`CLOCK_AT`].
async fn spawn_on_clock(
    backend: Backend,
    change: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    let at = DateTime::parse_from_rfc3339(CLOCK_AT)
        .expect("a fixed instant")
        .with_timezone(&Utc);
    TestApp::spawn_with_clock(backend, Clock::manual(at), change).await
}

/// How long the pending count may stand still before the judging counts as stuck. Only a
/// stall fails: judging 10,000 lines takes seconds on a quiet machine and more than a
/// minute on a loaded one, but each chunk of them lowers the count.
const JUDGING_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until no uploaded line is pending, for as long as the pending count keeps falling.
async fn wait_until_judged(app: &TestApp) {
    let mut fewest = i64::MAX;
    let mut deadline = Instant::now() + JUDGING_STALL;
    loop {
        let pending = app
            .count("SELECT COUNT(*) FROM terminal_punch WHERE outcome = 'pending'")
            .await;
        if pending == 0 {
            return;
        }
        if pending < fewest {
            fewest = pending;
            deadline = Instant::now() + JUDGING_STALL;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} lines stayed pending for {JUDGING_STALL:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The terminals' zone and its offset in hours: east of UTC, so local times really are
/// converted, and by [`CLOCK_AT`] still on UTC's date, the date of the server's sessions
/// (Addis Ababa keeps no daylight saving time).
fn terminal_zone() -> (&'static str, i64) {
    ("Africa/Addis_Ababa", 3)
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
