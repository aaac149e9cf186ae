//! Terms and their holidays: the school days the timetable runs on.

use chrono::NaiveDate;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use super::check_order;
use crate::auth::Principal;
use crate::entities::{holiday, term};
use crate::error::{AppError, AppResult};
use crate::service::access::{self};
use crate::service::sql::conflict_on;
use crate::service::{Service, required_text};

impl Service {
    /// Every term, in date order.
    pub async fn terms(&self, actor: &Principal) -> AppResult<Vec<term::Model>> {
        access::require_person(actor)?;
        Ok(term::Entity::find()
            .order_by_asc(term::Column::StartsOn)
            .order_by_asc(term::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// The holidays of `term_ids`, in date order.
    pub async fn holidays_of(&self, term_ids: &[i32]) -> AppResult<Vec<holiday::Model>> {
        Ok(holiday::Entity::find()
            .filter(holiday::Column::TermId.is_in(term_ids.iter().copied()))
            .order_by_asc(holiday::Column::StartsOn)
            .all(&self.db)
            .await?)
    }

    /// Creates a term; its dates must be in order and its name unique (admins only).
    pub async fn create_term(
        &self,
        actor: &Principal,
        name: &str,
        starts_on: NaiveDate,
        ends_on: NaiveDate,
    ) -> AppResult<term::Model> {
        access::require_admin(actor)?;
        let name = required_text("name", name, 100)?;
        check_order("endsOn", starts_on, ends_on)?;
        term::ActiveModel {
            name: Set(name.clone()),
            starts_on: Set(starts_on),
            ends_on: Set(ends_on),
            created_at: Set(self.now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("name", &name))
    }

    /// Corrects a term; its holidays must still fall inside it (admins only).
    pub async fn update_term(
        &self,
        actor: &Principal,
        id: i32,
        name: Option<&str>,
        starts_on: Option<NaiveDate>,
        ends_on: Option<NaiveDate>,
    ) -> AppResult<term::Model> {
        access::require_admin(actor)?;
        let existing = term::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("term"))?;
        let name = match name {
            Some(name) => required_text("name", name, 100)?,
            None => existing.name.clone(),
        };
        let starts_on = starts_on.unwrap_or(existing.starts_on);
        let ends_on = ends_on.unwrap_or(existing.ends_on);
        check_order("endsOn", starts_on, ends_on)?;
        if let Some(outside) = self
            .holidays_of(&[id])
            .await?
            .into_iter()
            .find(|h| h.starts_on < starts_on || h.ends_on > ends_on)
        {
            return Err(AppError::invalid(
                if outside.starts_on < starts_on {
                    "startsOn"
                } else {
                    "endsOn"
                },
                format!("the holiday {:?} would fall outside the term", outside.name),
            ));
        }
        let mut active: term::ActiveModel = existing.into();
        active.name = Set(name.clone());
        active.starts_on = Set(starts_on);
        active.ends_on = Set(ends_on);
        active
            .update(&self.db)
            .await
            .map_err(conflict_on("name", &name))
    }

    /// Adds a holiday (one day when `ends_on` is omitted) inside its term (admins only).
    pub async fn add_holiday(
        &self,
        actor: &Principal,
        term_id: i32,
        name: &str,
        starts_on: NaiveDate,
        ends_on: Option<NaiveDate>,
    ) -> AppResult<holiday::Model> {
        access::require_admin(actor)?;
        let name = required_text("name", name, 100)?;
        let ends_on = ends_on.unwrap_or(starts_on);
        check_order("endsOn", starts_on, ends_on)?;
        let term = term::Entity::find_by_id(term_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::invalid("termId", "no term has this id"))?;
        if starts_on < term.starts_on || starts_on > term.ends_on {
            return Err(AppError::invalid("startsOn", "must fall inside the term"));
        }
        if ends_on > term.ends_on {
            return Err(AppError::invalid("endsOn", "must fall inside the term"));
        }
        let holiday = holiday::ActiveModel {
            term_id: Set(term_id),
            name: Set(name),
            starts_on: Set(starts_on),
            ends_on: Set(ends_on),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        self.timetable_changed();
        Ok(holiday)
    }

    /// Removes a holiday: its days' classes take place again (admins only).
    pub async fn remove_holiday(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        let deleted = holiday::Entity::delete_by_id(id).exec(&self.db).await?;
        if deleted.rows_affected == 0 {
            return Err(AppError::NotFound("holiday"));
        }
        self.timetable_changed();
        Ok(())
    }
}
