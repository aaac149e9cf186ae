//! Enrolment: students written onto and removed from terminals. The service refuses
//! anyone but an admin itself, so the rule holds for every transport, not only behind
//! GraphQL's guard.

use attendance::auth::{Principal, Role};
use attendance::error::AppError;

use super::SN;
use crate::both_databases;
use crate::common::*;

both_databases!(
    only_an_admin_can_push_a_roster_or_remove_a_student_in_the_service,
    only_an_admin_can_read_approve_or_reconfigure_terminals_in_the_service,
);

fn admin() -> Principal {
    Principal::User {
        user_id: 1,
        role: Role::Admin,
        teacher_id: None,
    }
}

async fn only_an_admin_can_push_a_roster_or_remove_a_student_in_the_service(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (id, _) = app.approve_terminal(&school.admin, SN, "UTC").await;
    let terminal_id: i32 = id.parse().expect("terminal id");
    let section_id: i32 = school.sections[0].parse().expect("section id");
    let terminal = app
        .service
        .terminal(&admin(), terminal_id)
        .await
        .expect("read terminal")
        .expect("terminal");
    // Only the role is read before the refusal; the user id is never looked up.
    let teacher = Principal::User {
        user_id: 2,
        role: Role::Teacher,
        teacher_id: Some(school.teacher_id.parse().expect("teacher id")),
    };
    // The terminal itself, with its own key: a device reads nothing and queues nothing.
    let device = Principal::Device {
        id: terminal.id,
        key_hash: terminal.key_hash,
    };

    for (who, actor) in [("teacher", &teacher), ("terminal", &device)] {
        let pushed = app
            .service
            .push_section_to_terminal(actor, terminal_id, section_id)
            .await;
        assert!(
            matches!(pushed, Err(AppError::Forbidden)),
            "a {who} pushed a roster: {pushed:?}"
        );
        let removed = app
            .service
            .remove_student_from_terminal(actor, terminal_id, "0099")
            .await;
        assert!(
            matches!(removed, Err(AppError::Forbidden)),
            "a {who} removed a student: {removed:?}"
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM terminal_command").await,
        0,
        "nothing was queued"
    );
}

async fn only_an_admin_can_read_approve_or_reconfigure_terminals_in_the_service(backend: Backend) {
    use attendance::service::PageRequest;
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (id, _) = app.approve_terminal(&school.admin, SN, "UTC").await;
    let terminal_id: i32 = id.parse().expect("terminal id");
    let teacher = Principal::User {
        user_id: 2,
        role: Role::Teacher,
        teacher_id: Some(school.teacher_id.parse().expect("teacher id")),
    };
    let device = Principal::Device {
        id: terminal_id,
        key_hash: String::new(),
    };
    let page = PageRequest {
        first: 10,
        after: None,
    };
    for actor in [&teacher, &device] {
        let service = &app.service;
        assert!(matches!(
            service.terminals(actor, None).await,
            Err(AppError::Forbidden)
        ));
        assert!(matches!(
            service.terminal(actor, terminal_id).await,
            Err(AppError::Forbidden)
        ));
        assert!(matches!(
            service.terminal_commands(actor, terminal_id, page).await,
            Err(AppError::Forbidden)
        ));
        assert!(matches!(
            service.terminal_rejected_lines(actor, None, page).await,
            Err(AppError::Forbidden)
        ));
        assert!(matches!(
            service
                .approve_terminal(actor, terminal_id, Some("renamed"), None)
                .await,
            Err(AppError::Forbidden)
        ));
        assert!(matches!(
            service
                .set_terminal_time_zone(actor, terminal_id, Some("Europe/Paris"))
                .await,
            Err(AppError::Forbidden)
        ));
    }
    let unchanged = app
        .service
        .terminal(&admin(), terminal_id)
        .await
        .expect("read terminal")
        .expect("terminal");
    assert_ne!(unchanged.name, "renamed");
    assert_eq!(unchanged.time_zone.as_deref(), Some("UTC"));
}
