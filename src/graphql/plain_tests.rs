//! Every plain field answers exactly what the derived resolver answers, and every field that
//! could be plain is.

use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use chrono::{Datelike, NaiveDate, TimeZone, Timelike, Utc};
use serde_json::{Value as Json, json};

use super::guard::Auth;
use super::objects::*;
use super::plain::{Plain, PlainList, RawLists};
use super::roster::StudentAttendance;
use crate::auth::{Principal, Role};
use crate::entities::{self, AttendanceStatus};

fn at(hour: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, hour, 7, 30).unwrap()
}

fn student(id: i32) -> entities::student::Model {
    entities::student::Model {
        id,
        student_code: format!("S{id:03}"),
        first_name: "Ana \"Q\"".into(),
        last_name: "Løvik".into(),
        section_id: 4,
        created_at: at(1),
        enrolled_at: at(2),
        is_active: true,
    }
}

fn record(id: i32, status: AttendanceStatus, scanned: bool) -> entities::attendance_record::Model {
    entities::attendance_record::Model {
        id,
        session_id: 9,
        student_id: id + 100,
        status,
        timestamp: at(8),
        scanned_at: scanned.then(|| at(8)),
        late_minutes: scanned.then_some(3),
        source: entities::RecordSource::Scan,
    }
}

fn session() -> entities::attendance_session::Model {
    entities::attendance_session::Model {
        id: 9,
        course_id: 3,
        date: NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(),
        created_by: 2,
        created_at: at(7),
        device_id: 5,
        is_active: false,
        starts_at: at(8),
        grace_minutes: 10,
        closes_at: at(9),
        closed_at: Some(at(9)),
        slot_id: None,
    }
}

fn device() -> entities::device::Model {
    entities::device::Model {
        id: 5,
        device_id: "DEV-01".into(),
        name: "Room 1".into(),
        is_active: true,
        key_hash: "x".into(),
        last_seen_at: None,
        created_at: at(3),
        serial_number: None,
        time_zone: None,
        approval: entities::DeviceApproval::Approved,
        firmware_version: None,
        push_version: None,
        records_accepted: 0,
        records_duplicate: 0,
        records_rejected: 0,
        drain_lease_until: None,
    }
}

fn tally(id: i32, rate: Option<f64>) -> crate::service::reports::StudentAttendance {
    crate::service::reports::StudentAttendance {
        student: student(id),
        present: 3,
        absent: 1,
        permission: 0,
        rate,
    }
}

macro_rules! samples {
    ($($slow:ident, $fast:ident, $slow_list:ident, $fast_list:ident: $ty:ty = $make:expr;)*) => {
        struct Samples;

        #[Object]
        impl Samples {
            $(
                async fn $slow(&self) -> $ty {
                    $make
                }
                async fn $fast(&self) -> Plain<$ty> {
                    Plain($make)
                }
                async fn $slow_list(&self) -> Vec<$ty> {
                    vec![$make, $make]
                }
                async fn $fast_list(&self) -> PlainList<$ty> {
                    PlainList(vec![$make, $make])
                }
            )*
        }
    };
}

samples! {
    slow_student, fast_student, slow_students, fast_students: Student = Student(student(1));
    slow_teacher, fast_teacher, slow_teachers, fast_teachers: Teacher =
        Teacher(entities::teacher::Model {
            id: 2,
            teacher_code: "T1".into(),
            first_name: "Tea".into(),
            last_name: "Cher".into(),
        });
    slow_course, fast_course, slow_courses, fast_courses: Course =
        Course(entities::course::Model {
            id: 3,
            name: "Algebra".into(),
            code: "MA1".into(),
            teacher_id: 2,
        });
    slow_section, fast_section, slow_sections, fast_sections: Section =
        Section(entities::section::Model {
            id: 4,
            name: "A".into(),
            dep_batch_id: 6,
        });
    slow_dep_batch, fast_dep_batch, slow_dep_batches, fast_dep_batches: DepBatch =
        DepBatch(entities::dep_batch::Model {
            id: 6,
            dep: "CS".into(),
            batch: "2026".into(),
        });
    slow_device, fast_device, slow_devices, fast_devices: Device = Device(device());
    slow_viewer, fast_viewer, slow_viewers, fast_viewers: Viewer =
        Viewer(entities::user::Model {
            id: 1,
            username: "admin".into(),
            password_hash: "x".into(),
            role: entities::UserRole::Admin,
            teacher_id: None,
            is_active: true,
            created_at: at(1),
            token_version: 0,
        });
    slow_session, fast_session, slow_sessions, fast_sessions: AttendanceSession =
        AttendanceSession(session());
    slow_record, fast_record, slow_records, fast_records: AttendanceRecord =
        AttendanceRecord::with_student(record(7, AttendanceStatus::Present, true), student(107));
    slow_absence, fast_absence, slow_absences, fast_absences: AttendanceRecord =
        AttendanceRecord::with_student(record(8, AttendanceStatus::Absent, false), student(108));
    slow_bare, fast_bare, slow_bares, fast_bares: AttendanceRecord =
        AttendanceRecord::new(record(9, AttendanceStatus::Present, true));
    slow_change, fast_change, slow_changes, fast_changes: RecordChange =
        RecordChange(entities::record_change::Model {
            id: 11,
            record_id: 7,
            session_id: 3,
            student_id: 108,
            kind: entities::ChangeKind::Edit,
            old_status: AttendanceStatus::Absent,
            new_status: Some(AttendanceStatus::Permission),
            changed_by: Some(1),
            changed_at: at(10),
            reason: Some("doctor".into()),
            excuse_id: Some(4),
        });
    slow_tally, fast_tally, slow_tallies, fast_tallies: StudentAttendance =
        StudentAttendance::from(tally(1, Some(0.75)));
    slow_empty_tally, fast_empty_tally, slow_empty_tallies, fast_empty_tallies: StudentAttendance =
        StudentAttendance::from(tally(2, None));
}

/// Scalar fields that are not plain on purpose: they need the viewer or another row.
const NOT_PLAIN: &[&str] = &["Teacher.username", "AttendanceSession.deviceId"];

fn schema() -> Schema<Samples, EmptyMutation, EmptySubscription> {
    schema_for(Principal::User {
        user_id: 1,
        role: Role::Admin,
        teacher_id: None,
    })
}

fn schema_for(principal: Principal) -> Schema<Samples, EmptyMutation, EmptySubscription> {
    Schema::build(Samples, EmptyMutation, EmptySubscription)
        .data(Auth::Principal(principal))
        .finish()
}

async fn run(query: &str) -> Json {
    let response = schema().execute(query).await;
    assert!(response.errors.is_empty(), "{query}: {:?}", response.errors);
    // Over HTTP the plain lists are written straight to JSON: the text must be the same.
    let expected = serde_json::to_string(&response).unwrap();
    let mut request = async_graphql::Request::new(query);
    if let Some(raw) = RawLists::for_document(request.parsed_query().unwrap()) {
        let written = schema().execute(request.data(raw.clone())).await;
        let text = String::from_utf8(raw.write_response(&written).unwrap()).unwrap();
        assert_eq!(text, expected, "{query}");
    }
    response.data.into_json().unwrap()
}

/// The type's fields that are scalars or enums and take no argument.
async fn scalar_fields(type_name: &str) -> Vec<String> {
    let data = run(&format!(
        r#"{{ __type(name: "{type_name}") {{ fields {{ name args {{ name }} type {{ kind ofType {{ kind }} }} }} }} }}"#
    ))
    .await;
    data["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["args"].as_array().unwrap().is_empty())
        .filter(|f| {
            let ty = &f["type"];
            let kind = if ty["kind"] == "NON_NULL" {
                &ty["ofType"]["kind"]
            } else {
                &ty["kind"]
            };
            kind == "SCALAR" || kind == "ENUM"
        })
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .filter(|name| !NOT_PLAIN.contains(&format!("{type_name}.{name}").as_str()))
        .collect()
}

async fn compare(slow: &str, fast: &str, selection: &str) {
    let query = format!("{{ slow: {slow} {selection} fast: {fast} {selection} }}");
    let data = run(&query).await;
    assert_eq!(data["slow"], data["fast"], "{query}");
    assert_ne!(data["fast"], Json::Null, "{query}");
}

#[tokio::test]
async fn every_scalar_field_is_plain_and_answers_as_the_derived_resolver() {
    let cases = [
        ("Student", "student", "students"),
        ("Teacher", "teacher", "teachers"),
        ("Course", "course", "courses"),
        ("Section", "section", "sections"),
        ("DepBatch", "depBatch", "depBatches"),
        ("Device", "device", "devices"),
        ("Viewer", "viewer", "viewers"),
        ("AttendanceSession", "session", "sessions"),
        ("AttendanceRecord", "record", "records"),
        ("AttendanceRecord", "absence", "absences"),
        ("RecordChange", "change", "changes"),
        ("StudentAttendance", "tally", "tallies"),
        ("StudentAttendance", "emptyTally", "emptyTallies"),
    ];
    for (type_name, one, many) in cases {
        let fields = scalar_fields(type_name).await;
        assert!(!fields.is_empty(), "{type_name} has no scalar field");
        let selection = format!("{{ __typename {} }}", fields.join(" "));
        let upper = |s: &str| format!("{}{}", s[..1].to_uppercase(), &s[1..]);
        compare(
            &format!("slow{}", upper(one)),
            &format!("fast{}", upper(one)),
            &selection,
        )
        .await;
        compare(
            &format!("slow{}", upper(many)),
            &format!("fast{}", upper(many)),
            &selection,
        )
        .await;
    }
    // The fast path must really be plain for them: a field it does not list would resolve
    // through the derived resolver and still compare equal, so check the list itself.
    use super::plain::{Field, PlainObject};
    let record =
        AttendanceRecord::with_student(record(7, AttendanceStatus::Present, true), student(1));
    for name in scalar_fields("AttendanceRecord").await {
        assert!(
            matches!(record.plain(&name), Field::Value(_)),
            "AttendanceRecord.{name}"
        );
    }
    assert!(matches!(record.plain("student"), Field::Object(_)));
    assert!(matches!(record.plain("session"), Field::Async));
    let alone = AttendanceRecord::new(record.record.clone());
    assert!(
        matches!(alone.plain("student"), Field::Async),
        "an unjoined student keeps its guard"
    );
}

#[tokio::test]
async fn nested_objects_fragments_aliases_and_repeated_keys_resolve_as_before() {
    let selection = r#"{
        __typename
        ... on AttendanceRecord { id status }
        ...F
        late: lateMinutes
        student { id studentCode }
        student { firstName lastName __typename }
        s2: student { ... on Student { sectionId enrolledAt } }
    }"#;
    let fragment = "fragment F on AttendanceRecord { timestamp scannedAt }";
    for (slow, fast) in [
        ("slowRecord", "fastRecord"),
        ("slowRecords", "fastRecords"),
        ("slowAbsences", "fastAbsences"),
    ] {
        let query = format!("{{ slow: {slow} {selection} fast: {fast} {selection} }} {fragment}");
        let data = run(&query).await;
        assert_eq!(data["slow"], data["fast"]);
    }
    let data = run(&format!("{{ fastRecords {selection} }} {fragment}")).await;
    assert_eq!(
        data["fastRecords"][0],
        json!({
            "__typename": "AttendanceRecord",
            "id": "7",
            "status": "PRESENT",
            "timestamp": "2026-09-01T08:07:30+00:00",
            "scannedAt": "2026-09-01T08:07:30+00:00",
            "late": 3,
            "student": {"id": "107", "studentCode": "S107", "firstName": "Ana \"Q\"", "lastName": "Løvik", "__typename": "Student"},
            "s2": {"sectionId": "4", "enrolledAt": "2026-09-01T02:07:30+00:00"},
        }),
        "keys in selection order, objects under one key merged"
    );
}

#[tokio::test]
async fn async_fields_in_a_plain_list_keep_their_guards_and_report_errors_where_they_occur() {
    // A device may see a record (its scan's answer) but not the record's student: on a
    // record read without its student, `student` goes through its guard, on each item,
    // with the item's path, while the plain fields of the same items resolve.
    let device = || Principal::Device {
        id: 5,
        key_hash: "x".into(),
    };
    let response = schema_for(device())
        .execute("{ fastBares { id student { id } } }")
        .await;
    let data = response.data.into_json().unwrap();
    assert_eq!(data["fastBares"][0]["id"], "9");
    assert_eq!(data["fastBares"][1]["id"], "9");
    assert_eq!(data["fastBares"][0].get("student"), None);
    let paths: Vec<String> = response
        .errors
        .iter()
        .map(|e| serde_json::to_string(&e.path).unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            r#"["fastBares",0,"student"]"#,
            r#"["fastBares",1,"student"]"#
        ]
    );
    let slow = schema_for(device())
        .execute("{ slowBares { id student { id } } }")
        .await;
    assert_eq!(
        serde_json::to_value(&slow.errors).unwrap(),
        serde_json::to_value(&response.errors)
            .unwrap()
            .to_string()
            .replace("fastBares", "slowBares")
            .parse::<Json>()
            .unwrap(),
        "the derived path refuses the same way"
    );
}

#[test]
fn dates_and_ids_are_written_exactly_as_the_derived_resolver_writes_them() {
    use super::plain::{IntoValue, id, rfc3339};
    use chrono::DateTime;
    let mut at = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
    let step = chrono::Duration::seconds(7_919_861);
    while at.year_ce().1 < 2200 {
        assert_eq!(rfc3339(&at), at.to_rfc3339());
        let fractional = at + chrono::Duration::microseconds(123_456);
        assert_eq!(rfc3339(&fractional), fractional.to_rfc3339());
        at += step;
    }
    for edge in [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        at.with_nanosecond(1).unwrap(),
    ] {
        assert_eq!(rfc3339(&edge), edge.to_rfc3339());
    }
    for n in [0, 7, -1, 42, i32::MAX, i32::MIN, 1_000_000] {
        let derived = async_graphql::ScalarType::to_value(&async_graphql::ID::from(n));
        assert_eq!(id(n).into_value(), derived);
        let mut written = Vec::new();
        id(n).write_json(&mut written).unwrap();
        assert_eq!(written, serde_json::to_vec(&derived).unwrap());
    }
}

#[tokio::test]
async fn plain_lists_are_written_straight_to_json_unless_a_key_repeats() {
    let query = r#"{ fastRecords { id status student { id firstName } } fastRecord { id } }"#;
    let mut request = async_graphql::Request::new(query);
    let raw = RawLists::for_document(request.parsed_query().unwrap()).expect("no key repeats");
    let response = schema().execute(request.data(raw.clone())).await;
    let data = response.data.clone().into_json().unwrap();
    assert!(
        data["fastRecords"].is_string(),
        "the list is a marker until written: {data}"
    );
    let text = String::from_utf8(raw.write_response(&response).unwrap()).unwrap();
    let written: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(
        written["data"]["fastRecords"][0],
        json!({"id": "7", "status": "PRESENT", "student": {"id": "107", "firstName": "Ana \"Q\""}})
    );
    assert_eq!(written["data"]["fastRecord"], json!({"id": "7"}));

    for repeated in [
        "{ fastRecords { id } fastRecords { status } }",
        "{ fastRecords { id id } }",
        "{ fastRecords { student { id } student { firstName } } }",
        "{ fastRecords { id ... on AttendanceRecord { id } } }",
        "{ fastRecords { ...F } fastRecords { id } } fragment F on AttendanceRecord { status }",
        "{ a: fastRecords { id } a: fastRecords { status } }",
    ] {
        let mut request = async_graphql::Request::new(repeated);
        assert!(
            RawLists::for_document(request.parsed_query().unwrap()).is_none(),
            "{repeated}"
        );
        // The engine merges them; the answer is the same as the derived resolvers'.
        let slow = run(&repeated.replace("fastRecords", "slowRecords")).await;
        assert_eq!(
            run(repeated).await.to_string(),
            slow.to_string().replace("slowRecords", "fastRecords"),
            "{repeated}"
        );
    }
}

#[tokio::test]
async fn answers_with_errors_are_written_as_serde_writes_them() {
    let query = "{ fastRecords { id } nope }";
    let mut request = async_graphql::Request::new(query);
    let raw = RawLists::for_document(request.parsed_query().unwrap()).unwrap();
    let mut response = schema().execute(request.data(raw.clone())).await;
    assert!(!response.errors.is_empty());
    response
        .extensions
        .insert("cost".into(), async_graphql::Value::from(3));
    let text = String::from_utf8(raw.write_response(&response).unwrap()).unwrap();
    assert_eq!(text, serde_json::to_string(&response).unwrap());
}
