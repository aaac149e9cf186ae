//! Enrolment: writing students onto terminals (a section's roster) and removing them, as
//! commands in the queue. A terminal knows a student by PIN, the student code.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::auth::Principal;
use crate::entities::{section, student, terminal_command};
use crate::error::{AppError, AppResult};
use crate::service::access::require_admin;
use crate::service::terminals::protocol::{delete_user_command, update_user_command};
use crate::service::{Service, code_text};

impl Service {
    /// Queues, for one terminal, a `DATA UPDATE USERINFO` of every student of a section
    /// (PIN = student code, name = first and last name), in student order. Admins only.
    pub async fn push_section_to_terminal(
        &self,
        actor: &Principal,
        terminal_id: i32,
        section_id: i32,
    ) -> AppResult<Vec<terminal_command::Model>> {
        require_admin(actor)?;
        let terminal = self.existing_terminal(terminal_id).await?;
        section::Entity::find_by_id(section_id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("section"))?;
        let students = student::Entity::find()
            .filter(student::Column::SectionId.eq(section_id))
            .order_by_asc(student::Column::Id)
            .all(&self.db)
            .await?;
        let commands: Vec<String> = students
            .iter()
            .map(|s| update_user_command(&s.student_code, &s.first_name, &s.last_name))
            .collect();
        self.queue_commands(actor, &terminal, commands).await
    }

    /// Queues, for one terminal, a `DATA DELETE USERINFO` of a student code. The student
    /// need not exist any more: removing a deleted student is the common case. Admins only.
    pub async fn remove_student_from_terminal(
        &self,
        actor: &Principal,
        terminal_id: i32,
        student_code: &str,
    ) -> AppResult<terminal_command::Model> {
        require_admin(actor)?;
        let code = code_text("studentCode", student_code)?;
        let terminal = self.existing_terminal(terminal_id).await?;
        self.queue_commands(actor, &terminal, vec![delete_user_command(&code)])
            .await?
            .pop()
            .ok_or_else(|| AppError::Internal("queued command not returned".into()))
    }
}
