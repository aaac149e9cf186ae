//! Rosters in (CSV import over GraphQL and the CLI), attendance out (CSV exports), reports.

use serde_json::json;

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_roster_upload_is_all_or_nothing_and_reimports_are_harmless,
    attendance_exports_as_csv_to_the_right_people,
    course_reports_count_and_rate_each_student,
);

fn roster(n: usize) -> String {
    let mut csv = String::from("student_code,first_name,last_name,section\n");
    for i in 0..n {
        let section = if i % 2 == 0 {
            "A"
        } else {
            "Software Eng./2024/B"
        };
        csv.push_str(&format!("R{i:05},First{i},\"Last, {i}\",{section}\n"));
    }
    csv
}

async fn a_roster_upload_is_all_or_nothing_and_reimports_are_harmless(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let before = app.count("SELECT COUNT(*) FROM student").await;

    let first = app.upload_roster(Some(&school.admin), &roster(1000)).await;
    let result = &first["data"]["importStudents"];
    assert_eq!(result["applied"], true, "{first}");
    assert_eq!(
        (result["created"].as_i64(), result["unchanged"].as_i64()),
        (Some(1000), Some(0))
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM student").await,
        before + 1000
    );

    let again = app.upload_roster(Some(&school.admin), &roster(1000)).await;
    let result = &again["data"]["importStudents"];
    assert_eq!(
        (
            result["created"].as_i64(),
            result["updated"].as_i64(),
            result["unchanged"].as_i64()
        ),
        (Some(0), Some(0), Some(1000))
    );

    let bad = "student_code,first_name,last_name,section\n\
               NEW1,Ok,Row,A\n\
               ,Missing,Code,A\n\
               NEW2,Too,Few\n\
               NEW3,Bad,Section,Z\n\
               NEW1,Twice,Listed,B\n\
               R00001,Renamed,Student,A\n";
    let rejected = app.upload_roster(Some(&school.admin), bad).await;
    let result = &rejected["data"]["importStudents"];
    assert_eq!(result["applied"], false);
    let lines: Vec<i64> = result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 5, 6], "{result}");
    assert!(
        result["errors"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("\"Z\"")
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM student").await,
        before + 1000,
        "nothing changed"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM student WHERE first_name = 'Renamed'")
            .await,
        0
    );

    let teacher = app.upload_roster(Some(&school.teacher), &roster(1)).await;
    assert_eq!(error_code(&teacher), "FORBIDDEN");
    let plain = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(&school.admin)
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.status().as_u16(),
        415,
        "multipart without a preflight header is refused"
    );
}

async fn download(app: &TestApp, token: Option<&str>, path: &str) -> (u16, String, String) {
    let mut req = app.client.get(format!("{}{path}", app.address));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, res.text().await.unwrap())
}

async fn attendance_exports_as_csv_to_the_right_people(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let session = app.open_session(&school).await;
    let today = app.today();
    let (_, record) = app
        .scan_today(&school, &school.students[0], "08:07:00")
        .await;
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PERMISSION, reason: \"late, excused\") { id } }",
        json!({"id": record["id"].to_string()}),
    )
    .await;
    app.close_session(&school.teacher, &session).await;

    let path = format!("/api/export/sessions/{session}/records.csv");
    let (status, content_type, csv) = download(&app, Some(&school.teacher), &path).await;
    assert_eq!(status, 200, "{csv}");
    assert!(content_type.starts_with("text/csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "session_id,date,course_code,student_code,first_name,last_name,section,status,scanned_at,late_minutes,status_set_at,last_edit_at,last_edit_by,last_edit_reason"
    );
    assert_eq!(lines.len(), 5, "{csv}");
    let edited = lines.iter().find(|l| l.contains("ST0000")).unwrap();
    assert!(edited.contains(",permission,"), "{edited}");
    assert!(edited.contains(&format!("{today} 08:07:00")), "{edited}");
    assert!(edited.contains(",t001,\"late, excused\""), "{edited}");
    assert_eq!(lines.iter().filter(|l| l.contains(",absent,")).count(), 3);

    let course = format!(
        "/api/export/courses/{}/attendance.csv?from={today}&to={today}",
        school.course_id
    );
    let (status, _, csv) = download(&app, Some(&school.admin), &course).await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 5);
    let (_, _, empty) = download(
        &app,
        Some(&school.admin),
        &format!(
            "/api/export/courses/{}/attendance.csv?to=2000-01-01",
            school.course_id
        ),
    )
    .await;
    assert_eq!(
        empty.lines().count(),
        1,
        "only the header before any session"
    );

    assert_eq!(download(&app, None, &path).await.0, 401);
    assert_eq!(download(&app, Some(&school.device_key), &path).await.0, 403);
    assert_eq!(
        download(&app, Some(&school.other_teacher), &path).await.0,
        404
    );
    assert_eq!(
        download(&app, Some(&school.other_teacher), &course).await.0,
        403
    );
    assert_eq!(
        download(
            &app,
            Some(&school.admin),
            &format!(
                "/api/export/courses/{}/attendance.csv?from=yesterday",
                school.course_id
            )
        )
        .await
        .0,
        422
    );
}

const REPORT: &str = "query($id: ID!, $rate: Float!) { courseReport(courseId: $id) { sessions course { code } students { student { studentCode } present absent permission rate } studentsBelow(rate: $rate) { student { studentCode } rate } } }";

async fn course_reports_count_and_rate_each_student(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    for round in 0..2 {
        let session = app.open_session(&school).await;
        app.scan_today(&school, &school.students[0], "08:00:00")
            .await;
        if round == 0 {
            app.scan_today(&school, &school.students[1], "08:00:00")
                .await;
        }
        app.close_session(&school.teacher, &session).await;
    }
    let before = app.statements.get();
    let data = app
        .gql_ok(
            Some(&school.teacher),
            REPORT,
            json!({"id": school.course_id, "rate": 0.75}),
        )
        .await;
    let statements = app.statements.get() - before;
    let report = &data["courseReport"];
    assert_eq!(report["sessions"], 2);
    assert_eq!(
        report["students"][0],
        json!({"student": {"studentCode": "ST0000"}, "present": 2, "absent": 0, "permission": 0, "rate": 1.0})
    );
    assert_eq!(report["students"][1]["rate"], 0.5);
    assert_eq!(
        report["studentsBelow"],
        json!([{"student": {"studentCode": "ST1000"}, "rate": 0.5}])
    );
    assert!(statements <= 6, "{statements} statements for a report");
    let denied = app
        .gql(
            Some(&school.other_teacher),
            REPORT,
            json!({"id": school.course_id, "rate": 0.5}),
        )
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_a_roster_with_a_progress_bar_and_refuses_bad_files() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let _school = app.seed_school(1).await;
    let dir =
        std::env::temp_dir().join(format!("att_roster_{}", attendance::auth::random_token(4)));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("roster.csv");
    std::fs::write(&good, roster(2500)).unwrap();
    let run = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_attendance"))
            .env_clear()
            .envs(test_env(&app.db.url))
            .arg("import-students")
            .arg(file)
            .output()
            .unwrap()
    };
    let out = run(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2500 created"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2500/2500"),
        "a progress bar on large files"
    );
    let again = run(&good);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 created, 0 updated, 2500 unchanged")
    );

    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "R99999,Ok,Row,A\nR99998,,Row,A\n").unwrap();
    let out = run(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: first_name"), "{stderr}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM student WHERE student_code = 'R99999'")
            .await,
        0
    );
    let _ = std::fs::remove_dir_all(dir);
}
