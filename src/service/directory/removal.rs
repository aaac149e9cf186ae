//! Deleting directory rows. A delete never takes history with it: a row that anything
//! depends on is refused (CONFLICT, reason `IN_USE`) with a message naming what depends on
//! it, and the foreign keys from attendance data `RESTRICT` as the last line of defence.
//! Each kind of row lists its dependents once, below; the check and the delete are one
//! statement, so nothing written between them can be taken along.

use crate::auth::Principal;
use crate::service::access;
use sea_orm::{ConnectionTrait, DbErr, SqlErr};

use crate::error::{AppError, AppResult, Reason};
use crate::service::Service;
use crate::service::sql::statement;

/// Rows that depend on the row `$1`: `rows` is the `FROM ... WHERE` clause selecting them.
struct Dependent {
    rows: &'static str,
    one: &'static str,
    many: &'static str,
}

const fn dependent(rows: &'static str, one: &'static str, many: &'static str) -> Dependent {
    Dependent { rows, one, many }
}

const RECORDS_OF_STUDENT: Dependent = dependent(
    "attendance_record x WHERE x.student_id = $1",
    "attendance record",
    "attendance records",
);
const AUDIT_OF_STUDENT: Dependent = dependent(
    "record_change x WHERE x.student_id = $1",
    "audit entry",
    "audit entries",
);
const COURSES_OF_TEACHER: Dependent =
    dependent("course x WHERE x.teacher_id = $1", "course", "courses");
const SESSIONS_OF_TEACHER: Dependent = dependent(
    "attendance_session x WHERE x.created_by = $1",
    "session",
    "sessions",
);
const AUDIT_BY_TEACHER: Dependent = dependent(
    "record_change x JOIN app_user u ON u.id = x.changed_by WHERE u.teacher_id = $1",
    "audit entry",
    "audit entries",
);
const CANCELLATIONS_BY_TEACHER: Dependent = dependent(
    "class_cancellation x JOIN app_user u ON u.id = x.created_by WHERE u.teacher_id = $1",
    "class cancellation",
    "class cancellations",
);
const EXCUSES_OF_STUDENT: Dependent =
    dependent("excuse x WHERE x.student_id = $1", "excuse", "excuses");
const EXCUSES_OF_COURSE: Dependent =
    dependent("excuse x WHERE x.course_id = $1", "excuse", "excuses");
const EXCUSES_BY_TEACHER: Dependent = dependent(
    "excuse x JOIN app_user u ON u.id = x.created_by OR u.id = x.revoked_by \
     WHERE u.teacher_id = $1",
    "excuse",
    "excuses",
);
const WARNINGS_OF_STUDENT: Dependent = dependent(
    "attendance_warning x WHERE x.student_id = $1",
    "attendance warning",
    "attendance warnings",
);
const WARNINGS_OF_COURSE: Dependent = dependent(
    "attendance_warning x WHERE x.course_id = $1",
    "attendance warning",
    "attendance warnings",
);
const SLOTS_OF_COURSE: Dependent = dependent(
    "schedule_slot x WHERE x.course_id = $1",
    "schedule slot",
    "schedule slots",
);
const SLOTS_ON_DEVICE: Dependent = dependent(
    "schedule_slot x WHERE x.device_id = $1",
    "schedule slot",
    "schedule slots",
);
const SESSIONS_OF_COURSE: Dependent = dependent(
    "attendance_session x WHERE x.course_id = $1",
    "session",
    "sessions",
);
const STUDENTS_OF_SECTION: Dependent =
    dependent("student x WHERE x.section_id = $1", "student", "students");
const COURSES_OF_SECTION: Dependent = dependent(
    "course_section x WHERE x.section_id = $1",
    "course",
    "courses",
);
const SECTIONS_OF_DEP_BATCH: Dependent =
    dependent("section x WHERE x.dep_batch_id = $1", "section", "sections");
const SESSIONS_ON_DEVICE: Dependent = dependent(
    "attendance_session x WHERE x.device_id = $1",
    "session",
    "sessions",
);
const LINES_OF_DEVICE: Dependent = dependent(
    "terminal_punch x WHERE x.device_id = $1",
    "terminal attendance line",
    "terminal attendance lines",
);

impl Service {
    /// Deletes a student nothing refers to; one with records or audit entries is `IN_USE`
    /// (set them inactive instead).
    pub async fn delete_student(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        self.delete_unless_used(
            "student",
            id,
            &[
                RECORDS_OF_STUDENT,
                AUDIT_OF_STUDENT,
                EXCUSES_OF_STUDENT,
                WARNINGS_OF_STUDENT,
            ],
        )
        .await
    }

    /// Deletes a teacher, and their login, when they teach no course, ran no session and
    /// wrote no audit entry.
    pub async fn delete_teacher(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        self.delete_unless_used(
            "teacher",
            id,
            &[
                COURSES_OF_TEACHER,
                SESSIONS_OF_TEACHER,
                AUDIT_BY_TEACHER,
                CANCELLATIONS_BY_TEACHER,
                EXCUSES_BY_TEACHER,
            ],
        )
        .await
    }

    /// Deletes a course that never held a session and has no timetable slot.
    pub async fn delete_course(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        self.delete_unless_used(
            "course",
            id,
            &[
                SESSIONS_OF_COURSE,
                SLOTS_OF_COURSE,
                EXCUSES_OF_COURSE,
                WARNINGS_OF_COURSE,
            ],
        )
        .await
    }

    /// Deletes a section with no students and no courses.
    pub async fn delete_section(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        self.delete_unless_used("section", id, &[STUDENTS_OF_SECTION, COURSES_OF_SECTION])
            .await
    }

    /// Deletes a dep-batch with no sections.
    pub async fn delete_dep_batch(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        self.delete_unless_used("dep_batch", id, &[SECTIONS_OF_DEP_BATCH])
            .await
    }

    /// Deletes a device that never ran a session, uploaded a line or had a timetable slot;
    /// its key stops working.
    pub async fn delete_device(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        self.delete_unless_used(
            "device",
            id,
            &[SESSIONS_ON_DEVICE, LINES_OF_DEVICE, SLOTS_ON_DEVICE],
        )
        .await?;
        self.forget_device_keys();
        Ok(())
    }

    /// Deletes row `id` of `table` unless a dependent refers to it, in one statement. When
    /// nothing was deleted, one more statement tells a missing row from a used one.
    async fn delete_unless_used(
        &self,
        table: &'static str,
        id: i32,
        dependents: &[Dependent],
    ) -> AppResult<()> {
        let backend = self.db.get_database_backend();
        let unused: String = dependents
            .iter()
            .map(|d| format!(" AND NOT EXISTS (SELECT 1 FROM {})", d.rows))
            .collect();
        let deleted = self
            .writer
            .execute_raw(statement(
                backend,
                &format!("DELETE FROM {table} WHERE id = $1{unused}"),
                vec![id.into()],
            ))
            .await;
        match deleted {
            Ok(done) if done.rows_affected() == 1 => return Ok(()),
            Ok(_) => {}
            // A dependent committed between the statement's check and its delete: the
            // foreign key refused, and the count below names it.
            Err(err) if is_foreign_key_violation(&err) => {}
            Err(err) => return Err(err.into()),
        }
        let counts: String = dependents
            .iter()
            .map(|d| format!(", (SELECT COUNT(*) FROM {})", d.rows))
            .collect();
        let row = self
            .db
            .query_one_raw(statement(
                backend,
                &format!("SELECT (SELECT COUNT(*) FROM {table} WHERE id = $1){counts}"),
                vec![id.into()],
            ))
            .await?
            .ok_or_else(|| AppError::Internal("a count returned no row".into()))?;
        let exists: i64 = row.try_get_by_index(0)?;
        if exists == 0 {
            return Err(AppError::NotFound(noun(table)));
        }
        let mut named = Vec::new();
        for (i, dependent) in dependents.iter().enumerate() {
            let n: i64 = row.try_get_by_index(i + 1)?;
            match n {
                0 => {}
                1 => named.push(format!("1 {}", dependent.one)),
                n => named.push(format!("{n} {}", dependent.many)),
            }
        }
        if named.is_empty() {
            // Whatever refused the delete is gone again; nothing names it.
            return Err(AppError::rejected(
                Reason::ConcurrentEdit,
                format!("the {} changed meanwhile; retry", noun(table)),
            ));
        }
        let verb = if named.len() == 1 && named[0].starts_with("1 ") {
            "depends"
        } else {
            "depend"
        };
        Err(AppError::rejected(
            Reason::InUse,
            format!("{} {verb} on this {}", join_and(&named), noun(table)),
        ))
    }
}

/// The row's kind as people say it.
fn noun(table: &'static str) -> &'static str {
    match table {
        "dep_batch" => "dep-batch",
        other => other,
    }
}

/// "a", "a and b", "a, b and c".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn is_foreign_key_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(SqlErr::ForeignKeyConstraintViolation(_))
    )
}

#[cfg(test)]
mod tests {
    use super::join_and;

    #[test]
    fn dependents_are_listed_as_people_write_lists() {
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(join_and(&items(&["2 courses"])), "2 courses");
        assert_eq!(
            join_and(&items(&["2 courses", "1 session"])),
            "2 courses and 1 session"
        );
        assert_eq!(
            join_and(&items(&["2 courses", "1 session", "3 audit entries"])),
            "2 courses, 1 session and 3 audit entries"
        );
    }
}
