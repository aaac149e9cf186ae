//! Students and teachers: who they are, corrections, departures (students switched off),
//! and teachers' login accounts made with them.

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};

use super::{
    NewStudent, NewTeacher, StudentChanges, StudentFilter, TeacherChanges, matches_any, save,
};
use crate::auth::Principal;
use crate::auth::password;
use crate::entities::{UserRole, student, teacher, user};
use crate::error::{AppError, AppResult};
use crate::service::access;
use crate::service::accounts::auth::check_password;
use crate::service::sql::{conflict_on, paginate};
use crate::service::{Page, PageRequest, Service, code_text, now, required_text};

impl Service {
    /// One page of students matching `filter`.
    pub async fn students(
        &self,
        actor: &Principal,
        filter: &StudentFilter,
        page: PageRequest,
    ) -> AppResult<Page<student::Model>> {
        access::require_person(actor)?;
        let mut query = student::Entity::find();
        if let Some(section_id) = filter.section_id {
            query = query.filter(student::Column::SectionId.eq(section_id));
        }
        if let Some(active) = filter.active {
            query = query.filter(student::Column::IsActive.eq(active));
        }
        if let Some(search) = filter
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            query = query.filter(matches_any(
                search,
                [
                    student::Column::StudentCode,
                    student::Column::FirstName,
                    student::Column::LastName,
                ],
            ));
        }
        paginate(&self.db, query, student::Column::Id, page).await
    }

    /// One student, for a caller who may read the directory.
    pub async fn student(&self, actor: &Principal, id: i32) -> AppResult<Option<student::Model>> {
        access::require_person(actor)?;
        self.student_row(id).await
    }

    /// One student by id, for a rule that has already checked its caller.
    pub(crate) async fn student_row(&self, id: i32) -> AppResult<Option<student::Model>> {
        Ok(student::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Creates a student.
    pub async fn create_student(
        &self,
        actor: &Principal,
        input: NewStudent,
    ) -> AppResult<student::Model> {
        access::require_admin(actor)?;
        let code = code_text("studentCode", &input.student_code)?;
        let first_name = required_text("firstName", &input.first_name, 100)?;
        let last_name = required_text("lastName", &input.last_name, 100)?;
        self.require_section("sectionId", input.section_id).await?;
        let at = self.now();
        student::ActiveModel {
            student_code: Set(code.clone()),
            first_name: Set(first_name),
            last_name: Set(last_name),
            section_id: Set(input.section_id),
            created_at: Set(at),
            enrolled_at: Set(at),
            is_active: Set(true),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("studentCode", &code))
    }

    /// Updates a student; moving them to another section restarts their enrolment there.
    pub async fn update_student(
        &self,
        actor: &Principal,
        id: i32,
        changes: StudentChanges,
    ) -> AppResult<student::Model> {
        access::require_admin(actor)?;
        let existing = self
            .student_row(id)
            .await?
            .ok_or(AppError::NotFound("student"))?;
        let mut active: student::ActiveModel = existing.clone().into();
        let mut code_value = existing.student_code.clone();
        if let Some(code) = changes.student_code {
            code_value = code_text("studentCode", &code)?;
            active.student_code = Set(code_value.clone());
        }
        if let Some(name) = changes.first_name {
            active.first_name = Set(required_text("firstName", &name, 100)?);
        }
        if let Some(name) = changes.last_name {
            active.last_name = Set(required_text("lastName", &name, 100)?);
        }
        if let Some(section_id) = changes.section_id {
            self.require_section("sectionId", section_id).await?;
            if section_id != existing.section_id {
                active.section_id = Set(section_id);
                active.enrolled_at = Set(self.now());
            }
        }
        save(
            &self.db,
            existing,
            active,
            conflict_on("studentCode", &code_value),
        )
        .await
    }

    /// Marks a student as departed (`false`) or back (`true`). A departed student keeps
    /// every record, is not marked absent by sessions that close from now on, and their
    /// scans are refused (`STUDENT_INACTIVE`) on every path: the scan rule checks the flag.
    pub async fn set_student_active(
        &self,
        actor: &Principal,
        id: i32,
        active: bool,
    ) -> AppResult<student::Model> {
        access::require_admin(actor)?;
        let existing = self
            .student_row(id)
            .await?
            .ok_or(AppError::NotFound("student"))?;
        let mut changes: student::ActiveModel = existing.clone().into();
        changes.is_active = Set(active);
        save(&self.db, existing, changes, AppError::from).await
    }

    /// One page of teachers, optionally matching a search on code or names.
    pub async fn teachers(
        &self,
        actor: &Principal,
        search: Option<&str>,
        page: PageRequest,
    ) -> AppResult<Page<teacher::Model>> {
        access::require_person(actor)?;
        let mut query = teacher::Entity::find();
        if let Some(search) = search.map(str::trim).filter(|s| !s.is_empty()) {
            query = query.filter(matches_any(
                search,
                [
                    teacher::Column::TeacherCode,
                    teacher::Column::FirstName,
                    teacher::Column::LastName,
                ],
            ));
        }
        paginate(&self.db, query, teacher::Column::Id, page).await
    }

    /// One teacher, for a caller who may read the directory.
    pub async fn teacher(&self, actor: &Principal, id: i32) -> AppResult<Option<teacher::Model>> {
        access::require_person(actor)?;
        self.teacher_row(id).await
    }

    /// One teacher by id, for a rule that has already checked its caller.
    pub(crate) async fn teacher_row(&self, id: i32) -> AppResult<Option<teacher::Model>> {
        Ok(teacher::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Creates a teacher together with their login account, in one transaction.
    pub async fn create_teacher(
        &self,
        actor: &Principal,
        input: NewTeacher,
    ) -> AppResult<teacher::Model> {
        access::require_admin(actor)?;
        let code = code_text("teacherCode", &input.teacher_code)?;
        let first_name = required_text("firstName", &input.first_name, 100)?;
        let last_name = required_text("lastName", &input.last_name, 100)?;
        let username = code_text("username", &input.username)?;
        check_password("password", &input.password)?;
        let hash = password::hash(input.password).await?;
        let txn = self.db.begin().await?;
        let teacher = teacher::ActiveModel {
            teacher_code: Set(code.clone()),
            first_name: Set(first_name),
            last_name: Set(last_name),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on("teacherCode", &code))?;
        user::ActiveModel {
            username: Set(username.clone()),
            password_hash: Set(hash),
            role: Set(UserRole::Teacher),
            teacher_id: Set(Some(teacher.id)),
            is_active: Set(true),
            created_at: Set(now()),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on("username", &username))?;
        txn.commit().await?;
        Ok(teacher)
    }

    /// Corrects a teacher's code or names.
    pub async fn update_teacher(
        &self,
        actor: &Principal,
        id: i32,
        changes: TeacherChanges,
    ) -> AppResult<teacher::Model> {
        access::require_admin(actor)?;
        let existing = self
            .teacher_row(id)
            .await?
            .ok_or(AppError::NotFound("teacher"))?;
        let mut active: teacher::ActiveModel = existing.clone().into();
        let mut code = existing.teacher_code.clone();
        if let Some(new_code) = changes.teacher_code {
            code = code_text("teacherCode", &new_code)?;
            active.teacher_code = Set(code.clone());
        }
        if let Some(name) = changes.first_name {
            active.first_name = Set(required_text("firstName", &name, 100)?);
        }
        if let Some(name) = changes.last_name {
            active.last_name = Set(required_text("lastName", &name, 100)?);
        }
        save(
            &self.db,
            existing,
            active,
            conflict_on("teacherCode", &code),
        )
        .await
    }
}
