//! Who may do what, for every transport: each service method that acts for someone takes
//! the actor (a person, a device, or [`Principal::System`] for the server and the CLI) and
//! checks it here first, so no rule relies on a guard it cannot see. GraphQL's role guards
//! are only a first gate that answers early; this is the rule.

use sea_orm::ColumnTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Query, SimpleExpr};

use crate::auth::Principal;
use crate::entities::{attendance_session, course, course_section, student};
use crate::error::{AppError, AppResult, Reason};

/// What a listing is narrowed to for its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything (admins).
    All,
    /// What belongs to this teacher: their courses and the sessions they created.
    Teacher(i32),
}

/// The part of a listing `actor` may read: admins all of it, teachers their own; devices
/// (and anyone else) nothing.
pub fn scope(actor: &Principal) -> AppResult<Scope> {
    if actor.is_admin() {
        return Ok(Scope::All);
    }
    actor
        .teacher_id()
        .map(Scope::Teacher)
        .ok_or(AppError::Forbidden)
}

/// Admins, or the teacher `teacher_id` themself: the one form of "admin, or the teacher
/// who owns it".
pub fn owns(actor: &Principal, teacher_id: i32) -> bool {
    actor.is_admin() || actor.teacher_id() == Some(teacher_id)
}

/// People (admins and teachers), and the system: who may read the directory. Devices read
/// nothing.
pub fn require_person(actor: &Principal) -> AppResult<()> {
    if actor.is_admin() || actor.teacher_id().is_some() {
        Ok(())
    } else {
        Err(AppError::Forbidden)
    }
}

/// Admins only (and the system, which acts with their rights).
pub fn require_admin(actor: &Principal) -> AppResult<()> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(AppError::Forbidden)
    }
}

/// A session is its creator's (and admins'): to read, close and edit.
pub fn may_see_session(actor: &Principal, session: &attendance_session::Model) -> bool {
    owns(actor, session.created_by)
}

/// The rows whose `session` column names a session `teacher_id` ran: what a teacher's
/// lists of records and of audit entries are narrowed to.
pub fn of_sessions_run_by(session: impl ColumnTrait, teacher_id: i32) -> SimpleExpr {
    session.in_subquery(
        Query::select()
            .column(attendance_session::Column::Id)
            .from(attendance_session::Entity)
            .and_where(Expr::col(attendance_session::Column::CreatedBy).eq(teacher_id))
            .to_owned(),
    )
}

/// The ids of the courses `teacher_id` teaches, as a subquery: what a teacher's lists of
/// slots, classes and excuses are narrowed to.
pub fn courses_taught_by(teacher_id: i32) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(course::Column::Id)
        .from(course::Entity)
        .and_where(Expr::col(course::Column::TeacherId).eq(teacher_id))
        .to_owned()
}

/// The ids of the students in a section of a course `teacher_id` teaches, as a subquery:
/// the only students whose school-wide excuses a teacher reads.
pub fn students_taught_by(teacher_id: i32) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(student::Column::Id)
        .from(student::Entity)
        .and_where(
            Expr::col(student::Column::SectionId).in_subquery(
                Query::select()
                    .column(course_section::Column::SectionId)
                    .from(course_section::Entity)
                    .and_where(
                        Expr::col(course_section::Column::CourseId)
                            .in_subquery(courses_taught_by(teacher_id)),
                    )
                    .to_owned(),
            ),
        )
        .to_owned()
}

/// A course is its teacher's (and admins'): to report on, open sessions for.
pub fn require_course(actor: &Principal, course: &course::Model) -> AppResult<()> {
    if owns(actor, course.teacher_id) {
        Ok(())
    } else {
        Err(AppError::rejected(
            Reason::NotYourCourse,
            "you do not teach this course",
        ))
    }
}

/// A teacher's login name is for admins and the teacher themself.
pub fn may_see_username(actor: &Principal, teacher_id: i32) -> bool {
    owns(actor, teacher_id)
}

/// An account (who made an edit or an excuse) is for admins and its own holder: teachers
/// do not learn admins' or colleagues' usernames through the audit trail.
pub fn may_see_account(actor: &Principal, user_id: i32) -> bool {
    actor.is_admin() || actor.user_id() == Some(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn admin() -> Principal {
        Principal::User {
            user_id: 1,
            role: Role::Admin,
            teacher_id: None,
        }
    }

    fn teacher(teacher_id: i32) -> Principal {
        Principal::User {
            user_id: 10 + teacher_id,
            role: Role::Teacher,
            teacher_id: Some(teacher_id),
        }
    }

    fn device() -> Principal {
        Principal::Device {
            id: 5,
            key_hash: "hash".into(),
        }
    }

    #[test]
    fn admins_see_everything_teachers_their_own_and_devices_nothing() {
        assert_eq!(scope(&admin()).unwrap(), Scope::All);
        assert_eq!(scope(&teacher(7)).unwrap(), Scope::Teacher(7));
        assert!(matches!(scope(&device()), Err(AppError::Forbidden)));
    }

    #[test]
    fn only_the_owner_or_an_admin_owns_a_row() {
        assert!(owns(&admin(), 3));
        assert!(owns(&teacher(3), 3));
        assert!(!owns(&teacher(4), 3));
        assert!(!owns(&device(), 3));
        assert!(may_see_username(&teacher(3), 3));
        assert!(!may_see_username(&teacher(4), 3));
    }

    #[test]
    fn only_admins_pass_the_admin_check() {
        assert!(require_admin(&admin()).is_ok());
        assert!(matches!(
            require_admin(&teacher(1)),
            Err(AppError::Forbidden)
        ));
        assert!(matches!(require_admin(&device()), Err(AppError::Forbidden)));
    }
}
