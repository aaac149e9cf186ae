//! Who may do what, checked in the service itself: each method is called directly (no
//! GraphQL guard in front of it) with a principal that must be refused.

use attendance::auth::{Principal, Role};
use attendance::error::{AppError, Reason};
use attendance::service::PageRequest;
use attendance::service::roll_call::records::RecordFilter;
use attendance::service::roll_call::sessions::SessionFilter;

use crate::both_databases;
use crate::common::*;

both_databases!(
    the_service_refuses_the_wrong_principal_without_a_guard,
    a_teacher_reads_only_their_own_sessions_and_records,
);

fn teacher(teacher_id: &str) -> Principal {
    Principal::User {
        user_id: 0,
        role: Role::Teacher,
        teacher_id: Some(teacher_id.parse().unwrap()),
    }
}

fn device(row_id: &str) -> Principal {
    Principal::Device {
        id: row_id.parse().unwrap(),
        key_hash: String::new(),
    }
}

const PAGE: PageRequest = PageRequest {
    first: 100,
    after: None,
};

async fn the_service_refuses_the_wrong_principal_without_a_guard(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    let session: i32 = app.open_session(&school).await.parse().unwrap();
    let (status, body) = app
        .scan_today(&school, &school.students[0], "08:00:00")
        .await;
    assert_eq!(status, 201, "{body}");
    let record: i32 = body["id"].as_i64().unwrap() as i32;
    let owner = teacher(&school.teacher_id);
    let other = teacher(&school.other_teacher_id);
    let terminal = device(&school.device_row_id);

    // Only admins delete records: the owner of the session may not either.
    for actor in [&owner, &other, &terminal] {
        assert!(
            matches!(
                app.service.delete_record(actor, record, None).await,
                Err(AppError::Forbidden)
            ),
            "{actor:?} deleted a record"
        );
    }
    // Another teacher's session is invisible, to close as to read.
    assert!(matches!(
        app.service.close_session(&other, session).await,
        Err(AppError::NotFound(_))
    ));
    assert!(
        app.service
            .session_for(&other, session)
            .await
            .unwrap()
            .is_none()
    );
    // A course report is its teacher's.
    let course: i32 = school.course_id.parse().unwrap();
    let refused = app.service.course_report(&other, course, None, None).await;
    assert!(
        matches!(&refused, Err(e) if e.reason() == Some(Reason::NotYourCourse)),
        "{refused:?}"
    );
    // Devices read nothing.
    assert!(matches!(
        app.service
            .sessions(&terminal, &SessionFilter::default(), PAGE)
            .await,
        Err(AppError::Forbidden)
    ));
    assert!(matches!(
        app.service
            .attendance_records(&terminal, &RecordFilter::default(), PAGE)
            .await,
        Err(AppError::Forbidden)
    ));
    // Nothing above changed anything.
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_session WHERE is_active")
            .await,
        1
    );
}

async fn a_teacher_reads_only_their_own_sessions_and_records(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    app.open_session(&school).await;
    let (status, _) = app
        .scan_today(&school, &school.students[0], "08:00:00")
        .await;
    assert_eq!(status, 201);
    let owner = teacher(&school.teacher_id);
    let other = teacher(&school.other_teacher_id);
    let sessions = |actor: Principal| {
        let service = app.service.clone();
        async move {
            service
                .sessions(&actor, &SessionFilter::default(), PAGE)
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(sessions(owner.clone()).await, 1);
    assert_eq!(sessions(other.clone()).await, 0);
    let records = |actor: Principal| {
        let service = app.service.clone();
        async move {
            service
                .attendance_records(&actor, &RecordFilter::default(), PAGE)
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(records(owner).await, 1);
    assert_eq!(records(other).await, 0);
}
