//! The timetable import: all or nothing, every bad line reported with its number and
//! reason, a repeat harmless; from GraphQL and from the command line.

use serde_json::json;

use super::{create_term, import};
use crate::both_databases;
use crate::common::*;

both_databases!(a_bad_timetable_file_is_refused_whole_and_a_good_one_twice_is_harmless);

async fn a_bad_timetable_file_is_refused_whole_and_a_good_one_twice_is_harmless(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();
    app.register_device(admin, "DEV-02").await;
    create_term(&app, admin, "Spring", "2027-03-01", "2027-06-30").await;

    let bad = "course_code,device_id,weekday,start_time,end_time\n\
               SE101,DEV-01,MONDAY,08:00,09:00\n\
               NOPE,DEV-01,TUESDAY,08:00,09:00\n\
               SE101,DEV-99,TUESDAY,08:00,09:00\n\
               SE101,DEV-01,Someday,08:00,09:00\n\
               SE101,DEV-01,WEDNESDAY,9am,10:00\n\
               SE101,DEV-01,THURSDAY,10:00,09:00\n\
               SE201,DEV-01,MONDAY,08:30,09:30\n\
               SE101,DEV-02,MONDAY,08:45,09:15\n\
               SE101,DEV-01\n\
               SE101,DEV-01,MONDAY,08:00,09:00\n";
    let refused = import(&app, admin, "Spring", bad).await;
    let result = &refused["data"]["importTimetable"];
    assert_eq!(result["applied"], false, "{refused}");
    let errors: Vec<(i64, String)> = result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_i64().unwrap(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let lines: Vec<i64> = errors.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10, 11], "{errors:?}");
    for (line, needle) in [
        (3, "course_code"),
        (4, "device_id"),
        (5, "weekday"),
        (6, "start_time"),
        (7, "end_time"),
        (8, "overlaps line 2"),
        (9, "overlaps line 2"),
        (10, "expected 5 columns"),
        (11, "repeats line 2"),
    ] {
        let reason = &errors.iter().find(|(l, _)| *l == line).unwrap().1;
        assert!(reason.contains(needle), "line {line}: {reason}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM schedule_slot").await, 0);

    let good = "SE101,DEV-01,MONDAY,08:00,09:00\nSE201,DEV-02,MONDAY,08:00,09:00\n";
    let applied = import(&app, admin, "Spring", good).await;
    assert_eq!(
        applied["data"]["importTimetable"],
        json!({"applied": true, "created": 2, "unchanged": 0, "errors": []})
    );
    let again = import(&app, admin, "Spring", good).await;
    assert_eq!(
        again["data"]["importTimetable"],
        json!({"applied": true, "created": 0, "unchanged": 2, "errors": []})
    );
    // A line overlapping a slot already there names it.
    let clash = import(&app, admin, "Spring", "SE201,DEV-01,MONDAY,08:30,09:30\n").await;
    let reason = clash["data"]["importTimetable"]["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("overlaps slot"), "{reason}");
    assert_eq!(app.count("SELECT COUNT(*) FROM schedule_slot").await, 2);
    let unknown = import(&app, admin, "Winter", good).await;
    assert_eq!(error_code(&unknown), "BAD_USER_INPUT");

    // The command line imports the same way.
    let dir = std::env::temp_dir().join(format!("tt-{}", attendance::auth::random_token(6)));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("timetable.csv");
    std::fs::write(&file, "SE101,DEV-01,TUESDAY,08:00,09:00\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_attendance"))
        .args(["import-timetable", "--term", "Spring"])
        .arg(&file)
        .env_clear()
        .envs(test_env(&app.db.url))
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 slots created"));
    std::fs::write(&file, "SE101,DEV-01,TUESDAY,08:30,09:00\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_attendance"))
        .args(["import-timetable", "--term", "Spring"])
        .arg(&file)
        .env_clear()
        .envs(test_env(&app.db.url))
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 1: overlaps slot"));
    assert_eq!(app.count("SELECT COUNT(*) FROM schedule_slot").await, 3);
    let _ = std::fs::remove_dir_all(dir);
}
