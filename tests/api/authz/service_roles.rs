//! The role matrix at the service itself: every transport (GraphQL, REST, the terminals'
//! protocol, the CLI) calls these methods, so each must refuse a caller without the rights
//! before it reads or writes anything, whatever guard a transport puts in front of it.

use attendance::auth::{Principal, Role};
use attendance::error::AppError;
use attendance::service::PageRequest;
use attendance::service::directory::{
    CourseChanges, NewCourse, NewStudent, NewTeacher, StudentChanges, StudentFilter, TeacherChanges,
};
use chrono::NaiveDate;

use crate::both_databases;
use crate::common::*;

both_databases!(
    admin_only_service_methods_refuse_teachers_and_devices,
    directory_reads_at_the_service_refuse_devices,
);

/// The principals the matrix calls with: the school's teacher and its device.
async fn teacher_and_device(app: &TestApp, school: &School) -> [Principal; 2] {
    let teacher_id: i32 = school.teacher_id.parse().unwrap();
    let user_id = app
        .count(&format!(
            "SELECT CAST(id AS BIGINT) FROM app_user WHERE teacher_id = {teacher_id}"
        ))
        .await as i32;
    [
        Principal::User {
            user_id,
            role: Role::Teacher,
            teacher_id: Some(teacher_id),
        },
        Principal::Device {
            id: school.device_row_id.parse().unwrap(),
            key_hash: attendance::auth::fast_hash(&school.device_key),
        },
    ]
}

/// Asserts `$call` (an `AppResult`) is FORBIDDEN, naming the call when it is not.
macro_rules! refused {
    ($call:expr) => {{
        let outcome = $call.await.map(|_| ());
        assert!(
            matches!(outcome, Err(AppError::Forbidden)),
            "{} answered {:?}",
            stringify!($call),
            outcome.err()
        );
    }};
}

/// The tables an admin-only call could have written to.
const WRITTEN: &str = "SELECT (SELECT COUNT(*) FROM dep_batch) + (SELECT COUNT(*) FROM section) \
     + (SELECT COUNT(*) FROM student) + (SELECT COUNT(*) FROM teacher) \
     + (SELECT COUNT(*) FROM course) + (SELECT COUNT(*) FROM device) \
     + (SELECT COUNT(*) FROM app_user) + (SELECT COUNT(*) FROM term) \
     + (SELECT COUNT(*) FROM schedule_slot) + (SELECT COUNT(*) FROM webhook)";

async fn admin_only_service_methods_refuse_teachers_and_devices(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let service = &app.service;
    let student: i32 = school.students[0].parse().unwrap();
    let teacher: i32 = school.teacher_id.parse().unwrap();
    let course: i32 = school.course_id.parse().unwrap();
    let section: i32 = school.sections[0].parse().unwrap();
    let dep_batch: i32 = school.dep_batch_id.parse().unwrap();
    let device: i32 = school.device_row_id.parse().unwrap();
    let before = app.count(WRITTEN).await;
    let day = NaiveDate::from_ymd_opt(2027, 1, 4).unwrap();
    for actor in &teacher_and_device(&app, &school).await {
        refused!(service.create_dep_batch(actor, "Dep", "2030"));
        refused!(service.update_dep_batch(actor, dep_batch, Some("X"), None));
        refused!(service.create_section(actor, "Z", dep_batch));
        refused!(service.update_section(actor, section, Some("Z"), None));
        refused!(service.create_student(
            actor,
            NewStudent {
                student_code: "NEW1".into(),
                first_name: "N".into(),
                last_name: "N".into(),
                section_id: section,
            }
        ));
        refused!(service.update_student(actor, student, StudentChanges::default()));
        refused!(service.set_student_active(actor, student, false));
        refused!(service.create_teacher(
            actor,
            NewTeacher {
                teacher_code: "T9".into(),
                first_name: "T".into(),
                last_name: "T".into(),
                username: "t9".into(),
                password: TEACHER_PASSWORD.into(),
            }
        ));
        refused!(service.update_teacher(actor, teacher, TeacherChanges::default()));
        refused!(service.create_course(
            actor,
            NewCourse {
                name: "N".into(),
                code: "N1".into(),
                teacher_id: teacher,
                section_ids: vec![section],
            }
        ));
        refused!(service.update_course(actor, course, CourseChanges::default()));
        refused!(service.devices(actor));
        refused!(service.register_device(actor, "DEV-9", None));
        refused!(service.update_device(actor, device, Some("Hall")));
        refused!(service.revoke_device(actor, device));
        refused!(service.rotate_device_key(actor, device));
        refused!(service.delete_student(actor, student));
        refused!(service.delete_teacher(actor, teacher));
        refused!(service.delete_course(actor, course));
        refused!(service.delete_section(actor, section));
        refused!(service.delete_dep_batch(actor, dep_batch));
        refused!(service.delete_device(actor, device));
        refused!(service.create_admin(actor, "root2", ADMIN_PASSWORD));
        refused!(service.create_or_reset_admin(actor, ADMIN_USER, "taken-over-1"));
        refused!(service.set_user_active(actor, 1, false));
        refused!(service.set_password(actor, 1, "taken-over-1"));
        refused!(service.users(actor, None, PageRequest::new(None, None).unwrap()));
        refused!(service.import_students(actor, "NEW2,N,N,A\n", &|_, _| {}));
        refused!(service.import_timetable(actor, "Spring", "SE101,DEV-01,MONDAY,08:00,09:00\n"));
        refused!(service.create_term(actor, "Spring", day, day));
    }
    assert_eq!(
        app.count(WRITTEN).await,
        before,
        "a refused call wrote nothing"
    );
    // The command line acts as the system, with an admin's rights.
    let system = Principal::System;
    assert!(
        service
            .create_dep_batch(&system, "Dep", "2030")
            .await
            .is_ok()
    );
}

async fn directory_reads_at_the_service_refuse_devices(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let service = &app.service;
    let [teacher, device] = teacher_and_device(&app, &school).await;
    let page = || PageRequest::new(None, None).unwrap();
    let id: i32 = school.students[0].parse().unwrap();
    refused!(service.dep_batches(&device));
    refused!(service.sections(&device, None));
    refused!(service.students(&device, &StudentFilter::default(), page()));
    refused!(service.student(&device, id));
    refused!(service.teachers(&device, None, page()));
    refused!(service.teacher(&device, school.teacher_id.parse().unwrap()));
    refused!(service.courses(&device, None, page()));
    refused!(service.course(&device, school.course_id.parse().unwrap()));
    refused!(service.terms(&device));
    // Teachers read the directory.
    let students = service
        .students(&teacher, &StudentFilter::default(), page())
        .await
        .expect("teachers read students");
    assert_eq!(students.total_count, 3);
    assert!(service.student(&teacher, id).await.unwrap().is_some());
}
