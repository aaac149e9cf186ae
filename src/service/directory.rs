//! The school directory: dep-batches, sections, students, teachers, courses and devices.

use std::collections::BTreeSet;

use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Set, TransactionTrait,
};

use super::auth::check_password;
use super::sql::{conflict_on, paginate, statement};
use super::{Page, PageRequest, Service, code_text, now, required_text};
use crate::auth::{fast_hash, new_device_key, password};
use crate::entities::{
    UserRole, attendance_record, course, course_section, dep_batch, device, section, student,
    teacher, user,
};
use crate::error::{AppError, AppResult, Reason};

/// Fields of a new student.
#[derive(Clone, Debug)]
pub struct NewStudent {
    /// Unique code printed on the student's card.
    pub student_code: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// The section the student belongs to.
    pub section_id: i32,
}

/// Changes to a student; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct StudentChanges {
    /// New code.
    pub student_code: Option<String>,
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
    /// New section.
    pub section_id: Option<i32>,
}

/// Fields of a new teacher and their login.
#[derive(Clone, Debug)]
pub struct NewTeacher {
    /// Unique staff code.
    pub teacher_code: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Login name.
    pub username: String,
    /// Initial password.
    pub password: String,
}

/// Fields of a new course.
#[derive(Clone, Debug)]
pub struct NewCourse {
    /// Display name.
    pub name: String,
    /// Unique code.
    pub code: String,
    /// The teacher who teaches it.
    pub teacher_id: i32,
    /// The sections it is taught to.
    pub section_ids: Vec<i32>,
}

/// Student list filters.
#[derive(Clone, Debug, Default)]
pub struct StudentFilter {
    /// Matches code, first or last name, case-insensitively.
    pub search: Option<String>,
    /// Only students of this section.
    pub section_id: Option<i32>,
}

/// A device with the API key it was just given; the key is never retrievable again.
#[derive(Clone, Debug)]
pub struct IssuedDeviceKey {
    /// The device.
    pub device: device::Model,
    /// The plaintext key.
    pub api_key: String,
}

impl Service {
    /// Every dep-batch.
    pub async fn dep_batches(&self) -> AppResult<Vec<dep_batch::Model>> {
        Ok(dep_batch::Entity::find()
            .order_by_asc(dep_batch::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Creates a dep-batch; the (dep, batch) pair is unique.
    pub async fn create_dep_batch(&self, dep: &str, batch: &str) -> AppResult<dep_batch::Model> {
        let dep = required_text("dep", dep, 200)?;
        let batch = required_text("batch", batch, 64)?;
        dep_batch::ActiveModel {
            dep: Set(dep.clone()),
            batch: Set(batch.clone()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("batch", &format!("{dep} {batch}")))
    }

    /// Every section, or those of one dep-batch.
    pub async fn sections(&self, dep_batch_id: Option<i32>) -> AppResult<Vec<section::Model>> {
        let mut query = section::Entity::find().order_by_asc(section::Column::Id);
        if let Some(id) = dep_batch_id {
            query = query.filter(section::Column::DepBatchId.eq(id));
        }
        Ok(query.all(&self.db).await?)
    }

    /// Creates a section in a dep-batch; names are unique within a dep-batch.
    pub async fn create_section(&self, name: &str, dep_batch_id: i32) -> AppResult<section::Model> {
        let name = required_text("name", name, 100)?;
        if dep_batch::Entity::find_by_id(dep_batch_id)
            .one(&self.db)
            .await?
            .is_none()
        {
            return Err(AppError::invalid("depBatchId", "no dep-batch has this id"));
        }
        section::ActiveModel {
            name: Set(name.clone()),
            dep_batch_id: Set(dep_batch_id),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("name", &name))
    }

    async fn require_section(&self, field: &str, id: i32) -> AppResult<section::Model> {
        section::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::invalid(field, "no section has this id"))
    }

    /// One page of students matching `filter`.
    pub async fn students(
        &self,
        filter: &StudentFilter,
        page: PageRequest,
    ) -> AppResult<Page<student::Model>> {
        let mut query = student::Entity::find();
        if let Some(section_id) = filter.section_id {
            query = query.filter(student::Column::SectionId.eq(section_id));
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

    /// One student by id.
    pub async fn student(&self, id: i32) -> AppResult<Option<student::Model>> {
        Ok(student::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Creates a student.
    pub async fn create_student(&self, input: NewStudent) -> AppResult<student::Model> {
        let code = code_text("studentCode", &input.student_code)?;
        let first_name = required_text("firstName", &input.first_name, 100)?;
        let last_name = required_text("lastName", &input.last_name, 100)?;
        self.require_section("sectionId", input.section_id).await?;
        let at = now();
        student::ActiveModel {
            student_code: Set(code.clone()),
            first_name: Set(first_name),
            last_name: Set(last_name),
            section_id: Set(input.section_id),
            created_at: Set(at),
            enrolled_at: Set(at),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("studentCode", &code))
    }

    /// Updates a student; moving them to another section restarts their enrolment there.
    pub async fn update_student(
        &self,
        id: i32,
        changes: StudentChanges,
    ) -> AppResult<student::Model> {
        let existing = self
            .student(id)
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
                active.enrolled_at = Set(now());
            }
        }
        if !active.is_changed() {
            return Ok(existing);
        }
        active
            .update(&self.db)
            .await
            .map_err(conflict_on("studentCode", &code_value))
    }

    /// Deletes a student that no attendance record depends on. A student with history is
    /// refused (CONFLICT, reason `IN_USE`): deleting them would delete their records.
    pub async fn delete_student(&self, id: i32) -> AppResult<student::Model> {
        let existing = self
            .student(id)
            .await?
            .ok_or(AppError::NotFound("student"))?;
        // One statement, so a record written between a check and the delete cannot be
        // taken with it.
        let deleted = self
            .db
            .execute_raw(statement(
                self.db.get_database_backend(),
                "DELETE FROM student WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM attendance_record r WHERE r.student_id = $1)",
                vec![id.into()],
            ))
            .await?;
        if deleted.rows_affected() == 1 {
            return Ok(existing);
        }
        let records = attendance_record::Entity::find()
            .filter(attendance_record::Column::StudentId.eq(id))
            .count(&self.db)
            .await?;
        if records == 0 {
            return Err(AppError::NotFound("student"));
        }
        Err(AppError::rejected(
            Reason::InUse,
            if records == 1 {
                "1 attendance record depends on this student".to_owned()
            } else {
                format!("{records} attendance records depend on this student")
            },
        ))
    }

    /// One page of teachers, optionally matching a search on code or names.
    pub async fn teachers(
        &self,
        search: Option<&str>,
        page: PageRequest,
    ) -> AppResult<Page<teacher::Model>> {
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

    /// One teacher by id.
    pub async fn teacher(&self, id: i32) -> AppResult<Option<teacher::Model>> {
        Ok(teacher::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Creates a teacher together with their login account, in one transaction.
    pub async fn create_teacher(&self, input: NewTeacher) -> AppResult<teacher::Model> {
        let code = code_text("teacherCode", &input.teacher_code)?;
        let first_name = required_text("firstName", &input.first_name, 100)?;
        let last_name = required_text("lastName", &input.last_name, 100)?;
        let username = code_text("username", &input.username)?;
        check_password(&input.password)?;
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

    /// One page of courses; `teacher_id` narrows to one teacher's.
    pub async fn courses(
        &self,
        teacher_id: Option<i32>,
        page: PageRequest,
    ) -> AppResult<Page<course::Model>> {
        let mut query = course::Entity::find();
        if let Some(teacher_id) = teacher_id {
            query = query.filter(course::Column::TeacherId.eq(teacher_id));
        }
        paginate(&self.db, query, course::Column::Id, page).await
    }

    /// One course by id.
    pub async fn course(&self, id: i32) -> AppResult<Option<course::Model>> {
        Ok(course::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Creates a course taught by a teacher to one or more sections, in one transaction.
    pub async fn create_course(&self, input: NewCourse) -> AppResult<course::Model> {
        let name = required_text("name", &input.name, 200)?;
        let code = code_text("code", &input.code)?;
        let section_ids: BTreeSet<i32> = input.section_ids.iter().copied().collect();
        if section_ids.is_empty() {
            return Err(AppError::invalid(
                "sectionIds",
                "must name at least one section",
            ));
        }
        if self.teacher(input.teacher_id).await?.is_none() {
            return Err(AppError::invalid("teacherId", "no teacher has this id"));
        }
        let found = section::Entity::find()
            .filter(section::Column::Id.is_in(section_ids.iter().copied()))
            .count(&self.db)
            .await?;
        if found != section_ids.len() as u64 {
            return Err(AppError::invalid(
                "sectionIds",
                "names a section that does not exist",
            ));
        }
        let txn = self.db.begin().await?;
        let course = course::ActiveModel {
            name: Set(name),
            code: Set(code.clone()),
            teacher_id: Set(input.teacher_id),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on("code", &code))?;
        course_section::Entity::insert_many(section_ids.iter().map(|section_id| {
            course_section::ActiveModel {
                course_id: Set(course.id),
                section_id: Set(*section_id),
            }
        }))
        .exec(&txn)
        .await?;
        txn.commit().await?;
        Ok(course)
    }

    /// Every device, in registration order.
    pub async fn devices(&self) -> AppResult<Vec<device::Model>> {
        Ok(device::Entity::find()
            .order_by_asc(device::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Registers a terminal and returns its API key, which is shown only this once.
    pub async fn register_device(
        &self,
        device_code: &str,
        name: Option<&str>,
    ) -> AppResult<IssuedDeviceKey> {
        let code = code_text("deviceId", device_code)?;
        let name = match name {
            Some(name) => required_text("name", name, 200)?,
            None => code.clone(),
        };
        let api_key = new_device_key();
        let device = device::ActiveModel {
            device_id: Set(code.clone()),
            name: Set(name),
            is_active: Set(true),
            key_hash: Set(fast_hash(&api_key)),
            last_seen_at: Set(None),
            created_at: Set(now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("deviceId", &code))?;
        Ok(IssuedDeviceKey { device, api_key })
    }

    /// Revokes a device: its key stops working at once and it cannot open sessions.
    pub async fn revoke_device(&self, id: i32) -> AppResult<device::Model> {
        let existing = device::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("device"))?;
        let mut active: device::ActiveModel = existing.into();
        active.is_active = Set(false);
        let device = active.update(&self.db).await?;
        self.forget_device_keys();
        Ok(device)
    }

    /// Gives a device a new key (re-activating it); the old key stops working at once.
    pub async fn rotate_device_key(&self, id: i32) -> AppResult<IssuedDeviceKey> {
        let existing = device::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("device"))?;
        let api_key = new_device_key();
        let mut active: device::ActiveModel = existing.into();
        active.key_hash = Set(fast_hash(&api_key));
        active.is_active = Set(true);
        let device = active.update(&self.db).await?;
        self.forget_device_keys();
        Ok(IssuedDeviceKey { device, api_key })
    }
}

/// Rows where any of `columns` contains `text`, case-insensitively (wildcards literal).
fn matches_any<C: ColumnTrait>(text: &str, columns: impl IntoIterator<Item = C>) -> Condition {
    let pattern = like_pattern(text);
    columns.into_iter().fold(Condition::any(), |any, column| {
        any.add(
            Expr::expr(Func::lower(Expr::col(column)))
                .like(LikeExpr::new(pattern.clone()).escape('\\')),
        )
    })
}

/// A case-insensitive LIKE pattern matching `text` anywhere, with wildcards escaped.
fn like_pattern(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}
