//! Directory management: CRUD, validation, conflicts, pagination and batched loading.

use serde_json::json;

use crate::both_databases;
use crate::common::*;

both_databases!(
    admin_manages_students_end_to_end,
    duplicate_codes_are_conflicts_naming_the_field,
    invalid_input_is_bad_user_input_naming_the_field,
    students_are_searchable_filterable_and_paginated,
    teachers_read_the_directory_but_cannot_change_it,
    courses_expose_teacher_sections_and_students,
    nested_directory_reads_use_a_constant_number_of_statements,
    devices_are_registered_revoked_and_rotated,
);

async fn admin_manages_students_end_to_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = Some(school.admin.as_str());

    let created = app
        .gql_ok(
            admin,
            "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id studentCode firstName lastName section { id name } } }",
            json!({"i": {"studentCode": "ST9000", "firstName": "Abebe", "lastName": "Kebede", "sectionId": school.sections[0]}}),
        )
        .await;
    let id = created["createStudent"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["createStudent"]["section"]["name"], "A");

    let updated = app
        .gql_ok(
            admin,
            "mutation($id: ID!, $i: UpdateStudentInput!) { updateStudent(id: $id, input: $i) { firstName lastName sectionId } }",
            json!({"id": id, "i": {"firstName": "Almaz", "sectionId": school.sections[1]}}),
        )
        .await;
    assert_eq!(updated["updateStudent"]["firstName"], "Almaz");
    assert_eq!(updated["updateStudent"]["lastName"], "Kebede");
    assert_eq!(
        updated["updateStudent"]["sectionId"],
        school.sections[1].as_str()
    );

    let fetched = app
        .gql_ok(
            admin,
            "query($id: ID!) { student(id: $id) { studentCode } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(fetched["student"]["studentCode"], "ST9000");

    let deleted = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { deleteStudent(id: $id) }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(deleted["deleteStudent"], true);
    let gone = app
        .gql_ok(
            admin,
            "query($id: ID!) { student(id: $id) { id } }",
            json!({"id": id}),
        )
        .await;
    assert!(gone["student"].is_null());

    let again = app
        .gql(
            admin,
            "mutation($id: ID!) { deleteStudent(id: $id) }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(error_code(&again), "NOT_FOUND");

    // A student with attendance history is not deleted, and neither is their history.
    app.open_session(&school).await;
    let (status, _) = app
        .scan_today(&school, &school.students[0], "08:00:00")
        .await;
    assert_eq!(status, 201);
    let refused = app
        .gql(
            admin,
            "mutation($id: ID!) { deleteStudent(id: $id) }",
            json!({"id": school.students[0]}),
        )
        .await;
    assert_eq!(error_code(&refused), "CONFLICT");
    assert_eq!(refused["errors"][0]["extensions"]["reason"], "IN_USE");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("1 attendance record depends on this student"),
        "{refused}"
    );
    let kept = app
        .gql_ok(
            admin,
            "query($id: ID!) { student(id: $id) { id } attendanceRecords(studentId: $id) { totalCount } }",
            json!({"id": school.students[0]}),
        )
        .await;
    assert_eq!(kept["student"]["id"], school.students[0].as_str());
    assert_eq!(kept["attendanceRecords"]["totalCount"], 1);
}

async fn duplicate_codes_are_conflicts_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = Some(school.admin.as_str());

    let student = app
        .gql(
            admin,
            "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
            json!({"i": {"studentCode": "ST0000", "firstName": "A", "lastName": "B", "sectionId": school.sections[0]}}),
        )
        .await;
    assert_eq!(error_code(&student), "CONFLICT");
    assert_eq!(student["errors"][0]["extensions"]["field"], "studentCode");
    assert!(
        student["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("studentCode")
    );

    let teacher = app
        .gql(
            admin,
            "mutation($i: CreateTeacherInput!) { createTeacher(input: $i) { id } }",
            json!({"i": {"teacherCode": "T001", "firstName": "A", "lastName": "B", "username": "fresh", "password": "long-enough-1"}}),
        )
        .await;
    assert_eq!(error_code(&teacher), "CONFLICT");
    assert_eq!(teacher["errors"][0]["extensions"]["field"], "teacherCode");

    let username = app
        .gql(
            admin,
            "mutation($i: CreateTeacherInput!) { createTeacher(input: $i) { id } }",
            json!({"i": {"teacherCode": "T999", "firstName": "A", "lastName": "B", "username": "t001", "password": "long-enough-1"}}),
        )
        .await;
    assert_eq!(error_code(&username), "CONFLICT");
    assert_eq!(username["errors"][0]["extensions"]["field"], "username");
    // The failed teacher was rolled back with its login.
    let teachers = app
        .gql_ok(admin, "{ teachers { totalCount } }", json!({}))
        .await;
    assert_eq!(teachers["teachers"]["totalCount"], 2);

    let course = app
        .gql(
            admin,
            "mutation($i: CreateCourseInput!) { createCourse(input: $i) { id } }",
            json!({"i": {"name": "Again", "code": "SE101", "teacherId": school.teacher_id, "sectionIds": [school.sections[0]]}}),
        )
        .await;
    assert_eq!(error_code(&course), "CONFLICT");
    assert_eq!(course["errors"][0]["extensions"]["field"], "code");

    let device = app
        .gql(
            admin,
            "mutation { registerDevice(input: {deviceId: \"DEV-01\"}) { apiKey } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&device), "CONFLICT");
    assert_eq!(device["errors"][0]["extensions"]["field"], "deviceId");
}

async fn invalid_input_is_bad_user_input_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = Some(school.admin.as_str());

    let cases = [
        (
            "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
            json!({"i": {"studentCode": "  ", "firstName": "A", "lastName": "B", "sectionId": school.sections[0]}}),
            "studentCode",
        ),
        (
            "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
            json!({"i": {"studentCode": "X1", "firstName": "A", "lastName": "B", "sectionId": "999999"}}),
            "sectionId",
        ),
        (
            "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
            json!({"i": {"studentCode": "X1", "firstName": "", "lastName": "B", "sectionId": school.sections[0]}}),
            "firstName",
        ),
        (
            "mutation($i: CreateCourseInput!) { createCourse(input: $i) { id } }",
            json!({"i": {"name": "C", "code": "C1", "teacherId": school.teacher_id, "sectionIds": []}}),
            "sectionIds",
        ),
        (
            "mutation($i: CreateCourseInput!) { createCourse(input: $i) { id } }",
            json!({"i": {"name": "C", "code": "C1", "teacherId": "424242", "sectionIds": [school.sections[0]]}}),
            "teacherId",
        ),
        (
            "mutation($i: CreateTeacherInput!) { createTeacher(input: $i) { id } }",
            json!({"i": {"teacherCode": "T5", "firstName": "A", "lastName": "B", "username": "t5", "password": "short"}}),
            "password",
        ),
        (
            "mutation($i: CreateSectionInput!) { createSection(input: $i) { id } }",
            json!({"i": {"name": "Z", "depBatchId": "not-a-number"}}),
            "depBatchId",
        ),
        (
            "{ students(first: 1000) { totalCount } }",
            json!({}),
            "first",
        ),
    ];
    for (query, variables, field) in cases {
        let body = app.gql(admin, query, variables.clone()).await;
        assert_eq!(
            error_code(&body),
            "BAD_USER_INPUT",
            "{query} {variables}: {body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let students = app
        .gql_ok(admin, "{ students { totalCount } }", json!({}))
        .await;
    assert_eq!(students["students"]["totalCount"], 3, "nothing was created");
}

async fn students_are_searchable_filterable_and_paginated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(5).await;
    let admin = Some(school.admin.as_str());
    app.gql_ok(
        admin,
        "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
        json!({"i": {"studentCode": "Z-100%", "firstName": "Selam", "lastName": "Tesfaye", "sectionId": school.sections[0]}}),
    )
    .await;

    let by_name = app
        .gql_ok(
            admin,
            "{ students(search: \"sELAm\") { totalCount edges { node { studentCode } } } }",
            json!({}),
        )
        .await;
    assert_eq!(by_name["students"]["totalCount"], 1);
    assert_eq!(
        by_name["students"]["edges"][0]["node"]["studentCode"],
        "Z-100%"
    );

    let wildcard = app
        .gql_ok(
            admin,
            "{ students(search: \"%\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        wildcard["students"]["totalCount"], 1,
        "% is matched literally"
    );

    let by_section = app
        .gql_ok(
            admin,
            "query($s: ID) { students(sectionId: $s) { totalCount } }",
            json!({"s": school.sections[1]}),
        )
        .await;
    assert_eq!(by_section["students"]["totalCount"], 5);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .gql_ok(
                admin,
                "query($a: String) { students(first: 4, after: $a) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id } } } }",
                json!({"a": after}),
            )
            .await;
        let conn = &page["students"];
        assert_eq!(conn["totalCount"], 12);
        for edge in conn["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].as_str().unwrap().to_owned());
        }
        if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(seen.len(), 12);
    assert_eq!(unique.len(), 12);
}

async fn teachers_read_the_directory_but_cannot_change_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let teacher = Some(school.teacher.as_str());

    let data = app
        .gql_ok(
            teacher,
            "{ students { totalCount } teachers { totalCount } depBatches { dep } sections { name } courses { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(data["students"]["totalCount"], 5);
    assert_eq!(data["teachers"]["totalCount"], 2);
    assert_eq!(data["sections"].as_array().unwrap().len(), 3);

    let denied = app
        .gql(
            teacher,
            "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
            json!({"i": {"studentCode": "NEW", "firstName": "A", "lastName": "B", "sectionId": school.sections[0]}}),
        )
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");
    let count = app
        .gql_ok(teacher, "{ students { totalCount } }", json!({}))
        .await;
    assert_eq!(count["students"]["totalCount"], 5);
}

async fn courses_expose_teacher_sections_and_students(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let data = app
        .gql_ok(
            Some(&school.teacher),
            "query($id: ID!) { course(id: $id) { code teacher { teacherCode } sections { name } students { studentCode } } }",
            json!({"id": school.course_id}),
        )
        .await;
    let course = &data["course"];
    assert_eq!(course["code"], "SE101");
    assert_eq!(course["teacher"]["teacherCode"], "T001");
    assert_eq!(course["sections"], json!([{"name": "A"}, {"name": "B"}]));
    let codes: Vec<&str> = course["students"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["studentCode"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["ST0000", "ST0001", "ST1000", "ST1001"]);
}

async fn nested_directory_reads_use_a_constant_number_of_statements(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let query = "{ courses(first: 20) { edges { node { code teacher { teacherCode } sections { name depBatch { dep } students { studentCode section { name } } } } } } }";

    let before = app.statements.get();
    app.gql_ok(Some(&school.admin), query, json!({})).await;
    let small = app.statements.get() - before;

    // Many more courses, sections and students.
    for c in 0..6 {
        let mut sections = Vec::new();
        for s in 0..3 {
            let section = app
                .create_section(&school.admin, &school.dep_batch_id, &format!("X{c}{s}"))
                .await;
            for n in 0..4 {
                app.create_student(&school.admin, &format!("X{c}{s}{n}"), &section)
                    .await;
            }
            sections.push(section);
        }
        let refs: Vec<&str> = sections.iter().map(String::as_str).collect();
        app.create_course(&school.admin, &format!("X{c}"), &school.teacher_id, &refs)
            .await;
    }

    let before = app.statements.get();
    let data = app.gql_ok(Some(&school.admin), query, json!({})).await;
    let large = app.statements.get() - before;
    assert_eq!(data["courses"]["edges"].as_array().unwrap().len(), 8);
    assert_eq!(small, large, "statement count grew with the rows returned");
    assert!(large <= 10, "{large} statements for one nested read");
}

async fn devices_are_registered_revoked_and_rotated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = Some(school.admin.as_str());
    let today = app.today();
    let time = app.now_time();
    app.open_session(&school).await;

    let list = app
        .gql_ok(admin, "{ devices { deviceId name isActive } }", json!({}))
        .await;
    assert_eq!(
        list["devices"],
        json!([{"deviceId": "DEV-01", "name": "Room 1", "isActive": true}])
    );
    assert!(school.device_key.starts_with("attdev_"));

    let rotated = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { rotateDeviceKey(id: $id) { apiKey } }",
            json!({"id": school.device_row_id}),
        )
        .await;
    let new_key = rotated["rotateDeviceKey"]["apiKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_key, school.device_key);
    let (status, _) = app
        .scan(&school.device_key, &school.students[0], &today, &time)
        .await;
    assert_eq!(status, 401, "the old key stops working");
    let (status, _) = app.scan(&new_key, &school.students[0], &today, &time).await;
    assert_eq!(status, 201);

    let revoked = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { revokeDevice(id: $id) { isActive } }",
            json!({"id": school.device_row_id}),
        )
        .await;
    assert_eq!(revoked["revokeDevice"]["isActive"], false);
    let (status, body) = app.scan(&new_key, &school.students[1], &today, &time).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");

    let stored = app
        .count(&format!(
            "SELECT COUNT(*) FROM device WHERE key_hash = '{}' OR key_hash = '{}'",
            school.device_key, new_key
        ))
        .await;
    assert_eq!(stored, 0, "keys are stored only as hashes");
}
