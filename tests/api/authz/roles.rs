//! The role matrix: every root operation called as anonymous, device, teacher and admin,
//! checked against an allow-table kept here. A new operation without an entry fails.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(every_operation_obeys_the_role_table);

const ANON: usize = 0;
const DEVICE: usize = 1;
const TEACHER: usize = 2;
const ADMIN: usize = 3;

const PEOPLE: [bool; 4] = [false, false, true, true];
const ADMIN_ONLY: [bool; 4] = [false, false, false, true];
const DEVICE_ONLY: [bool; 4] = [false, true, false, false];
const PUBLIC: [bool; 4] = [true, true, true, true];

/// (operation, document, allowed for [anonymous, device, teacher, admin]).
fn table(s: &School) -> Vec<(&'static str, String, [bool; 4])> {
    let sec = &s.sections[0];
    vec![
        ("me", "{ me { id } }".into(), PEOPLE),
        ("students", "{ students { totalCount } }".into(), PEOPLE),
        ("student", format!("{{ student(id: \"{}\") {{ id }} }}", s.students[0]), PEOPLE),
        ("teachers", "{ teachers { totalCount } }".into(), PEOPLE),
        ("teacher", format!("{{ teacher(id: \"{}\") {{ id }} }}", s.teacher_id), PEOPLE),
        ("depBatches", "{ depBatches { id } }".into(), PEOPLE),
        ("sections", "{ sections { id } }".into(), PEOPLE),
        ("courses", "{ courses { totalCount } }".into(), PEOPLE),
        ("course", format!("{{ course(id: \"{}\") {{ id }} }}", s.course_id), PEOPLE),
        ("devices", "{ devices { id } }".into(), ADMIN_ONLY),
        ("courseReport", format!("{{ courseReport(courseId: \"{}\") {{ sessions }} }}", s.course_id), PEOPLE),
        ("sessions", "{ sessions { totalCount } }".into(), PEOPLE),
        ("session", "{ session(id: \"999999\") { id } }".into(), PEOPLE),
        ("attendanceRecords", "{ attendanceRecords { totalCount } }".into(), PEOPLE),
        (
            "login",
            format!("mutation {{ login(username: \"{ADMIN_USER}\", password: \"{ADMIN_PASSWORD}\") {{ accessToken }} }}"),
            PUBLIC,
        ),
        ("refreshToken", "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }".into(), PUBLIC),
        ("logout", "mutation { logout(refreshToken: \"whatever\") }".into(), PUBLIC),
        ("createDepBatch", "mutation { createDepBatch(input: {dep: \"Matrix\", batch: \"2030\"}) { id } }".into(), ADMIN_ONLY),
        ("createSection", format!("mutation {{ createSection(input: {{name: \"M\", depBatchId: \"{}\"}}) {{ id }} }}", s.dep_batch_id), ADMIN_ONLY),
        ("createStudent", format!("mutation {{ createStudent(input: {{studentCode: \"M1\", firstName: \"M\", lastName: \"M\", sectionId: \"{sec}\"}}) {{ id }} }}"), ADMIN_ONLY),
        ("updateStudent", format!("mutation {{ updateStudent(id: \"{}\", input: {{firstName: \"Renamed\"}}) {{ id }} }}", s.students[1]), ADMIN_ONLY),
        ("deleteStudent", format!("mutation {{ deleteStudent(id: \"{}\") }}", s.outsider), ADMIN_ONLY),
        ("createTeacher", "mutation { createTeacher(input: {teacherCode: \"M9\", firstName: \"M\", lastName: \"M\", username: \"m9\", password: \"matrix-pass-1\"}) { id } }".into(), ADMIN_ONLY),
        ("setUserActive", "mutation { setUserActive(userId: \"999999\", active: true) { id } }".into(), ADMIN_ONLY),
        ("importStudents", "(multipart upload)".into(), ADMIN_ONLY),
        ("createCourse", format!("mutation {{ createCourse(input: {{name: \"M\", code: \"M-1\", teacherId: \"{}\", sectionIds: [\"{sec}\"]}}) {{ id }} }}", s.teacher_id), ADMIN_ONLY),
        ("registerDevice", "mutation { registerDevice(input: {deviceId: \"DEV-M\"}) { apiKey } }".into(), ADMIN_ONLY),
        ("revokeDevice", "mutation { revokeDevice(id: \"999999\") { id } }".into(), ADMIN_ONLY),
        ("rotateDeviceKey", "mutation { rotateDeviceKey(id: \"999999\") { apiKey } }".into(), ADMIN_ONLY),
        ("createSession", format!("mutation {{ createSession(input: {{courseId: \"{}\", deviceId: \"{}\"}}) {{ id }} }}", s.course_id, s.device_code), PEOPLE),
        ("scan", format!("mutation {{ scan(input: {{studentId: \"{}\", date: \"2030-01-01\", time: \"08:00:00\"}}) {{ id }} }}", s.students[0]), DEVICE_ONLY),
        ("closeSession", "mutation { closeSession(id: \"999999\") { markedAbsent } }".into(), PEOPLE),
        ("editStatus", "mutation { editStatus(recordId: \"999999\", status: PERMISSION) { id } }".into(), PEOPLE),
        ("deleteAttendanceRecord", "mutation { deleteAttendanceRecord(id: \"999999\") }".into(), ADMIN_ONLY),
        ("users", "{ users { totalCount } }".into(), ADMIN_ONLY),
        ("recordChanges", "{ recordChanges { totalCount } }".into(), PEOPLE),
        ("updateTeacher", "mutation { updateTeacher(id: \"999999\", input: {firstName: \"M\"}) { id } }".into(), ADMIN_ONLY),
        ("updateCourse", "mutation { updateCourse(id: \"999999\", input: {name: \"M\"}) { id } }".into(), ADMIN_ONLY),
        ("updateSection", "mutation { updateSection(id: \"999999\", input: {name: \"M\"}) { id } }".into(), ADMIN_ONLY),
        ("updateDepBatch", "mutation { updateDepBatch(id: \"999999\", input: {dep: \"M\"}) { id } }".into(), ADMIN_ONLY),
        ("updateDevice", "mutation { updateDevice(id: \"999999\", input: {name: \"M\"}) { id } }".into(), ADMIN_ONLY),
        ("deleteTeacher", "mutation { deleteTeacher(id: \"999999\") }".into(), ADMIN_ONLY),
        ("deleteCourse", "mutation { deleteCourse(id: \"999999\") }".into(), ADMIN_ONLY),
        ("deleteSection", "mutation { deleteSection(id: \"999999\") }".into(), ADMIN_ONLY),
        ("deleteDepBatch", "mutation { deleteDepBatch(id: \"999999\") }".into(), ADMIN_ONLY),
        ("deleteDevice", "mutation { deleteDevice(id: \"999999\") }".into(), ADMIN_ONLY),
        ("setStudentActive", "mutation { setStudentActive(id: \"999999\", active: false) { id } }".into(), ADMIN_ONLY),
        ("changePassword", "mutation { changePassword(currentPassword: \"not-the-password\", newPassword: \"matrix-pass-2\") }".into(), PEOPLE),
        ("setPassword", "mutation { setPassword(userId: \"999999\", newPassword: \"matrix-pass-2\") }".into(), ADMIN_ONLY),
        ("createAdmin", "mutation { createAdmin(input: {username: \"matrix-admin\", password: \"matrix-pass-1\"}) { id } }".into(), ADMIN_ONLY),
        ("terms", "{ terms { id } }".into(), PEOPLE),
        ("scheduleSlots", "{ scheduleSlots { id } }".into(), PEOPLE),
        ("timetable", "{ timetable(from: \"2027-03-01\", to: \"2027-03-07\") { date } }".into(), PEOPLE),
        ("attendanceNotTaken", "{ attendanceNotTaken(from: \"2027-03-01\", to: \"2027-03-07\") { date } }".into(), PEOPLE),
        ("createTerm", "mutation { createTerm(input: {name: \"Matrix\", startsOn: \"2027-03-01\", endsOn: \"2027-06-30\"}) { id } }".into(), ADMIN_ONLY),
        ("updateTerm", "mutation { updateTerm(id: \"999999\", input: {name: \"M\"}) { id } }".into(), ADMIN_ONLY),
        ("addHoliday", "mutation { addHoliday(input: {termId: \"999999\", startsOn: \"2027-03-03\", name: \"M\"}) { id } }".into(), ADMIN_ONLY),
        ("removeHoliday", "mutation { removeHoliday(id: \"999999\") }".into(), ADMIN_ONLY),
        ("createScheduleSlot", "mutation { createScheduleSlot(input: {courseId: \"999999\", termId: \"999999\", deviceId: \"DEV-X\", weekday: MONDAY, startTime: \"08:00:00\", endTime: \"09:00:00\"}) { id } }".into(), ADMIN_ONLY),
        ("updateScheduleSlot", "mutation { updateScheduleSlot(id: \"999999\", input: {weekday: TUESDAY}) { id } }".into(), ADMIN_ONLY),
        ("deleteScheduleSlot", "mutation { deleteScheduleSlot(id: \"999999\") }".into(), ADMIN_ONLY),
        ("cancelClass", "mutation { cancelClass(slotId: \"999999\", date: \"2027-03-01\") { status } }".into(), PEOPLE),
        ("importTimetable", "(multipart upload)".into(), ADMIN_ONLY),
        ("excuses", "{ excuses { totalCount } }".into(), PEOPLE),
        ("studentReport", format!("{{ studentReport(studentId: \"{}\") {{ present }} }}", s.students[0]), PEOPLE),
        ("createExcuse", format!("mutation {{ createExcuse(input: {{studentId: \"{}\", from: \"2027-03-01\", to: \"2027-03-02\", reason: \"M\", courseId: \"{}\"}}) {{ id }} }}", s.students[0], s.course_id), PEOPLE),
        ("revokeExcuse", "mutation { revokeExcuse(id: \"999999\") { id } }".into(), PEOPLE),
        ("warningRules", "{ warningRules { id } }".into(), PEOPLE),
        ("attendanceWarnings", "{ attendanceWarnings { totalCount } }".into(), PEOPLE),
        ("setWarningRule", format!("mutation {{ setWarningRule(input: {{courseId: \"{}\", minRate: 0.5}}) {{ id }} }}", s.course_id), PEOPLE),
        ("deleteWarningRule", "mutation { deleteWarningRule(id: \"999999\") }".into(), PEOPLE),
        ("webhooks", "{ webhooks { id } }".into(), ADMIN_ONLY),
        ("webhookDeliveries", "{ webhookDeliveries(webhookId: \"999999\") { totalCount } }".into(), ADMIN_ONLY),
        ("createWebhook", "mutation { createWebhook(input: {url: \"http://127.0.0.1:9/hook\", events: [SESSION_CLOSED]}) { secret } }".into(), ADMIN_ONLY),
        ("deleteWebhook", "mutation { deleteWebhook(id: \"999999\") }".into(), ADMIN_ONLY),
        ("rotateWebhookSecret", "mutation { rotateWebhookSecret(id: \"999999\") { secret } }".into(), ADMIN_ONLY),
        ("redeliver", "mutation { redeliver(deliveryId: \"999999\") { id } }".into(), ADMIN_ONLY),
        ("terminals", "{ terminals { id } }".into(), ADMIN_ONLY),
        ("terminal", "{ terminal(id: \"999999\") { id } }".into(), ADMIN_ONLY),
        ("terminalCommands", "{ terminalCommands(terminalId: \"999999\") { totalCount } }".into(), ADMIN_ONLY),
        ("terminalRejectedLines", "{ terminalRejectedLines { totalCount } }".into(), ADMIN_ONLY),
        ("approveTerminal", "mutation { approveTerminal(id: \"999999\") { id } }".into(), ADMIN_ONLY),
        ("setTerminalTimeZone", "mutation { setTerminalTimeZone(id: \"999999\", timeZone: \"UTC\") { id } }".into(), ADMIN_ONLY),
        ("pushSectionToTerminal", format!("mutation {{ pushSectionToTerminal(terminalId: \"999999\", sectionId: \"{sec}\") {{ id }} }}"), ADMIN_ONLY),
        ("removeStudentFromTerminal", "mutation { removeStudentFromTerminal(terminalId: \"999999\", studentCode: \"X1\") { id } }".into(), ADMIN_ONLY),
    ]
}

/// Root field names of `type NAME { ... }` in the exported SDL.
fn root_fields(sdl: &str, type_name: &str) -> BTreeSet<String> {
    let header = format!("type {type_name} {{");
    let start = sdl.find(&header).expect("root type in SDL") + header.len();
    let body = &sdl[start..start + sdl[start..].find("\n}").expect("end of type")];
    let mut fields = BTreeSet::new();
    let mut in_doc = false;
    for line in body.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("\"\"\"") {
            if !(trimmed.len() > 3 && trimmed.ends_with("\"\"\"")) {
                in_doc = !in_doc;
            }
            continue;
        }
        if in_doc || !line.starts_with('\t') || line.starts_with("\t\t") || trimmed.is_empty() {
            continue;
        }
        let name: String = trimmed
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            fields.insert(name);
        }
    }
    fields
}

fn denied(body: &Value) -> bool {
    let code = error_code(body);
    (code == "UNAUTHENTICATED" || code == "FORBIDDEN") && error_reason(body) == "<none>"
}

async fn every_operation_obeys_the_role_table(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let entries = table(&school);

    let sdl = attendance::graphql::sdl();
    let mut operations = root_fields(&sdl, "QueryRoot");
    operations.extend(root_fields(&sdl, "MutationRoot"));
    let covered: BTreeSet<String> = entries.iter().map(|(op, _, _)| op.to_string()).collect();
    assert_eq!(
        operations, covered,
        "every root operation needs a row in the role table"
    );

    let callers: [Option<String>; 4] = [
        None,
        Some(school.device_key.clone()),
        Some(school.teacher.clone()),
        Some(school.admin.clone()),
    ];
    let names = ["anonymous", "device", "teacher", "admin"];
    for (op, document, allowed) in &entries {
        for role in [ANON, DEVICE, TEACHER, ADMIN] {
            let variables = if *op == "refreshToken" {
                let login = app
                    .gql_ok(
                        None,
                        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { refreshToken } }",
                        json!({"u": ADMIN_USER, "p": ADMIN_PASSWORD}),
                    )
                    .await;
                json!({"t": login["login"]["refreshToken"]})
            } else {
                json!({})
            };
            let body = if *op == "importStudents" {
                // Uploads only arrive as multipart requests.
                app.upload_roster(callers[role].as_deref(), "MATRIX1,M,M,A\n")
                    .await
            } else if *op == "importTimetable" {
                app.gql_upload(
                    callers[role].as_deref(),
                    "mutation($f: Upload!) { importTimetable(term: \"none\", file: $f) { applied } }",
                    json!({"f": null}),
                    "SE101,DEV-01,MONDAY,08:00,09:00\n",
                )
                .await
            } else {
                app.gql(callers[role].as_deref(), document, variables).await
            };
            if allowed[role] {
                assert!(
                    !denied(&body),
                    "{op} should be allowed for {}: {body}",
                    names[role]
                );
            } else {
                assert!(
                    denied(&body),
                    "{op} should be denied for {}: {body}",
                    names[role]
                );
                let expected = if role == ANON {
                    "UNAUTHENTICATED"
                } else {
                    "FORBIDDEN"
                };
                assert_eq!(error_code(&body), expected, "{op} as {}", names[role]);
            }
        }
    }
}
