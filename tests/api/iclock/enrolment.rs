//! Enrolment: students written onto and removed from terminals. The service refuses
//! anyone but an admin itself, so the rule holds for every transport, not only behind
//! GraphQL's guard.

use attendance::auth::{Principal, Role};
use attendance::error::AppError;

use super::SN;
use crate::both_databases;
use crate::common::*;

both_databases!(only_an_admin_can_push_a_roster_or_remove_a_student_in_the_service);

async fn only_an_admin_can_push_a_roster_or_remove_a_student_in_the_service(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (id, _) = app.approve_terminal(&school.admin, SN, "UTC").await;
    let terminal_id: i32 = id.parse().expect("terminal id");
    let section_id: i32 = school.sections[0].parse().expect("section id");
    let terminal = app
        .service
        .terminal(terminal_id)
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
