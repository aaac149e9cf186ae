//! Corrections: every directory entity can be updated partially, with the creates' checks.

use serde_json::json;

use super::{field, refused};
use crate::both_databases;
use crate::common::*;

both_databases!(
    every_directory_entity_is_corrected_field_by_field,
    corrections_are_checked_like_creates,
    a_course_s_new_sections_count_from_the_next_close_and_closed_records_stay,
);

async fn every_directory_entity_is_corrected_field_by_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = Some(school.admin.as_str());

    let teacher = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { updateTeacher(id: $id, input: {firstName: \"Selam\"}) { teacherCode firstName lastName } }",
            json!({"id": school.teacher_id}),
        )
        .await;
    assert_eq!(
        teacher["updateTeacher"],
        json!({"teacherCode": "T001", "firstName": "Selam", "lastName": "T001"})
    );
    let teacher = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { updateTeacher(id: $id, input: {teacherCode: \"T101\", lastName: \"Bekele\"}) { teacherCode firstName lastName } }",
            json!({"id": school.teacher_id}),
        )
        .await;
    assert_eq!(
        teacher["updateTeacher"],
        json!({"teacherCode": "T101", "firstName": "Selam", "lastName": "Bekele"})
    );

    // A course moves to another teacher and gains a section; omitted fields stay.
    let course = app
        .gql_ok(
            admin,
            "mutation($id: ID!, $i: UpdateCourseInput!) { updateCourse(id: $id, input: $i) { name code teacher { id } sections { id } } }",
            json!({"id": school.course_id, "i": {"teacherId": school.other_teacher_id, "sectionIds": [school.sections[0], school.sections[1], school.sections[2]]}}),
        )
        .await;
    let course = &course["updateCourse"];
    assert_eq!(course["code"], "SE101");
    assert_eq!(course["teacher"]["id"], school.other_teacher_id.as_str());
    let mut sections: Vec<&str> = course["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    sections.sort();
    let mut expected: Vec<&str> = school.sections.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(sections, expected);
    // The same set again changes nothing.
    let same = app
        .gql_ok(
            admin,
            "mutation($id: ID!, $s: [ID!]!) { updateCourse(id: $id, input: {sectionIds: $s}) { sections { id } } }",
            json!({"id": school.course_id, "s": [school.sections[2], school.sections[1], school.sections[0]]}),
        )
        .await;
    assert_eq!(
        same["updateCourse"]["sections"].as_array().unwrap().len(),
        3
    );
    let course = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { updateCourse(id: $id, input: {name: \"Software Design\", code: \"SE102\"}) { name code teacher { id } } }",
            json!({"id": school.course_id}),
        )
        .await;
    assert_eq!(course["updateCourse"]["name"], "Software Design");
    assert_eq!(course["updateCourse"]["code"], "SE102");
    assert_eq!(
        course["updateCourse"]["teacher"]["id"],
        school.other_teacher_id.as_str()
    );
    // The new teacher now sees it among their courses; the old one no longer does.
    let mine = app
        .gql_ok(
            Some(&school.other_teacher),
            "{ courses { nodes { code } } }",
            json!({}),
        )
        .await;
    let codes: Vec<&str> = mine["courses"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"SE102"), "{mine}");

    let other_batch = app
        .gql_ok(
            admin,
            "mutation { createDepBatch(input: {dep: \"Civil Eng.\", batch: \"2025\"}) { id } }",
            json!({}),
        )
        .await["createDepBatch"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let section = app
        .gql_ok(
            admin,
            "mutation($id: ID!, $b: ID!) { updateSection(id: $id, input: {name: \"A1\", depBatchId: $b}) { name depBatch { id } } }",
            json!({"id": school.sections[0], "b": other_batch}),
        )
        .await;
    assert_eq!(
        section["updateSection"],
        json!({"name": "A1", "depBatch": {"id": other_batch}})
    );

    let batch = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { updateDepBatch(id: $id, input: {batch: \"2026\"}) { dep batch } }",
            json!({"id": school.dep_batch_id}),
        )
        .await;
    assert_eq!(
        batch["updateDepBatch"],
        json!({"dep": "Software Eng.", "batch": "2026"})
    );

    let device = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { updateDevice(id: $id, input: {name: \"Room 12\"}) { deviceId name isActive } }",
            json!({"id": school.device_row_id}),
        )
        .await;
    assert_eq!(
        device["updateDevice"],
        json!({"deviceId": "DEV-01", "name": "Room 12", "isActive": true})
    );
    // An empty input changes nothing and answers the row as it is.
    let same = app
        .gql_ok(
            admin,
            "mutation($id: ID!) { updateDevice(id: $id, input: {}) { name } }",
            json!({"id": school.device_row_id}),
        )
        .await;
    assert_eq!(same["updateDevice"]["name"], "Room 12");
    // The renamed device still scans, for the course's new teacher.
    app.create_session(
        &school.other_teacher,
        json!({"courseId": school.course_id, "deviceId": "DEV-01"}),
    )
    .await;
    let (status, body) = app.scan_now(&school, &school.students[0]).await;
    assert_eq!(status, 201, "{body}");
}

async fn corrections_are_checked_like_creates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();

    let taken = refused(
        &app,
        admin,
        "mutation($id: ID!) { updateTeacher(id: $id, input: {teacherCode: \"T002\"}) { id } }",
        json!({"id": school.teacher_id}),
    )
    .await;
    assert_eq!(
        (error_code(&taken), field(&taken)),
        ("CONFLICT", "teacherCode")
    );
    let taken = refused(
        &app,
        admin,
        "mutation($id: ID!) { updateCourse(id: $id, input: {code: \"SE201\"}) { id } }",
        json!({"id": school.course_id}),
    )
    .await;
    assert_eq!((error_code(&taken), field(&taken)), ("CONFLICT", "code"));
    let taken = refused(
        &app,
        admin,
        "mutation($id: ID!) { updateSection(id: $id, input: {name: \"B\"}) { id } }",
        json!({"id": school.sections[0]}),
    )
    .await;
    assert_eq!((error_code(&taken), field(&taken)), ("CONFLICT", "name"));

    for (document, id, wanted) in [
        (
            "mutation($id: ID!) { updateTeacher(id: $id, input: {firstName: \"  \"}) { id } }",
            &school.teacher_id,
            "firstName",
        ),
        (
            "mutation($id: ID!) { updateTeacher(id: $id, input: {teacherCode: \"T 1\"}) { id } }",
            &school.teacher_id,
            "teacherCode",
        ),
        (
            "mutation($id: ID!) { updateCourse(id: $id, input: {sectionIds: []}) { id } }",
            &school.course_id,
            "sectionIds",
        ),
        (
            "mutation($id: ID!) { updateCourse(id: $id, input: {sectionIds: [\"999999\"]}) { id } }",
            &school.course_id,
            "sectionIds",
        ),
        (
            "mutation($id: ID!) { updateCourse(id: $id, input: {teacherId: \"999999\"}) { id } }",
            &school.course_id,
            "teacherId",
        ),
        (
            "mutation($id: ID!) { updateCourse(id: $id, input: {teacherId: \"x\"}) { id } }",
            &school.course_id,
            "teacherId",
        ),
        (
            "mutation($id: ID!) { updateSection(id: $id, input: {depBatchId: \"999999\"}) { id } }",
            &school.sections[0],
            "depBatchId",
        ),
        (
            "mutation($id: ID!) { updateDepBatch(id: $id, input: {dep: \"\"}) { id } }",
            &school.dep_batch_id,
            "dep",
        ),
        (
            "mutation($id: ID!) { updateDevice(id: $id, input: {name: \"\"}) { id } }",
            &school.device_row_id,
            "name",
        ),
    ] {
        let body = refused(&app, admin, document, json!({"id": id})).await;
        assert_eq!(
            (error_code(&body), field(&body)),
            ("BAD_USER_INPUT", wanted),
            "{document}: {body}"
        );
    }
    // Bad input changed nothing.
    let course = app
        .gql_ok(
            Some(admin),
            "query($id: ID!) { course(id: $id) { teacher { id } sections { id } } }",
            json!({"id": school.course_id}),
        )
        .await;
    assert_eq!(
        course["course"]["teacher"]["id"],
        school.teacher_id.as_str()
    );
    assert_eq!(course["course"]["sections"].as_array().unwrap().len(), 2);

    for document in [
        "mutation { updateTeacher(id: \"999999\", input: {firstName: \"X\"}) { id } }",
        "mutation { updateCourse(id: \"999999\", input: {name: \"X\"}) { id } }",
        "mutation { updateSection(id: \"999999\", input: {name: \"X\"}) { id } }",
        "mutation { updateDepBatch(id: \"999999\", input: {dep: \"X\"}) { id } }",
        "mutation { updateDevice(id: \"999999\", input: {name: \"X\"}) { id } }",
    ] {
        let body = refused(&app, admin, document, json!({})).await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{document}");
    }
}

async fn a_course_s_new_sections_count_from_the_next_close_and_closed_records_stay(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let admin = Some(school.admin.as_str());

    let first = app.open_session(&school).await;
    assert_eq!(app.close_session(&school.teacher, &first).await, 4);
    let before = app
        .gql_ok(
            admin,
            "query($id: ID!) { session(id: $id) { records { studentId status } } }",
            json!({"id": first}),
        )
        .await;

    // The course now reaches section C only (the outsider's).
    app.gql_ok(
        admin,
        "mutation($id: ID!, $s: ID!) { updateCourse(id: $id, input: {sectionIds: [$s]}) { id } }",
        json!({"id": school.course_id, "s": school.sections[2]}),
    )
    .await;
    let after = app
        .gql_ok(
            admin,
            "query($id: ID!) { session(id: $id) { records { studentId status } } }",
            json!({"id": first}),
        )
        .await;
    assert_eq!(before, after, "a closed session's records never change");

    let second = app.open_session(&school).await;
    let (status, body) = app.scan_now(&school, &school.students[0]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("STUDENT_NOT_IN_COURSE")),
        "{body}"
    );
    let (status, body) = app.scan_now(&school, &school.outsider).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.close_session(&school.teacher, &second).await, 0);

    // A student moved into a section of the course is expected from the next close on.
    app.gql_ok(
        admin,
        "mutation($id: ID!, $s: ID!) { updateStudent(id: $id, input: {sectionId: $s}) { id } }",
        json!({"id": school.students[0], "s": school.sections[2]}),
    )
    .await;
    let third = app.open_session(&school).await;
    assert_eq!(app.close_session(&school.teacher, &third).await, 2);
}
