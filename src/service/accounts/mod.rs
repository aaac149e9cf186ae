//! Login accounts over their lifetime: admins created and listed, passwords changed and
//! reset, accounts switched off, and the rule that the school always keeps an active admin.

pub mod auth;
pub mod limiter;

use std::net::IpAddr;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, QueryTrait, Set, TransactionTrait,
};

use crate::auth::{Principal, Role, password};
use crate::entities::{UserRole, refresh_token, user};
use crate::error::{AppError, AppResult, Reason};
use crate::service::access;
use crate::service::accounts::auth::{check_password, invalid_credentials};
use crate::service::accounts::limiter::Attempt;
use crate::service::sql::{conflict_on, paginate, write_transaction};
use crate::service::{Page, PageRequest, Service, now};

impl Service {
    /// Creates an admin account; a taken username is CONFLICT naming `username`.
    pub async fn create_admin(
        &self,
        actor: &Principal,
        username: &str,
        password: &str,
    ) -> AppResult<user::Model> {
        access::require_admin(actor)?;
        let username = crate::service::code_text("username", username)?;
        check_password("password", password)?;
        let hash = password::hash(password.to_owned()).await?;
        user::ActiveModel {
            username: Set(username.clone()),
            password_hash: Set(hash),
            role: Set(UserRole::Admin),
            teacher_id: Set(None),
            is_active: Set(true),
            created_at: Set(now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("username", &username))
    }

    /// The command line's `create-admin`: creates the admin, or resets the password of an
    /// existing admin of that name (and re-activates it), for whoever holds the server.
    pub async fn create_or_reset_admin(
        &self,
        actor: &Principal,
        username: &str,
        password: &str,
    ) -> AppResult<user::Model> {
        access::require_admin(actor)?;
        let name = crate::service::code_text("username", username)?;
        let existing = user::Entity::find()
            .filter(user::Column::Username.eq(name.as_str()))
            .one(&self.db)
            .await?;
        match existing {
            None => self.create_admin(actor, &name, password).await,
            Some(user) if user.role == UserRole::Admin => {
                check_password("password", password)?;
                let hash = password::hash(password.to_owned()).await?;
                let txn = self.writer.begin_with_options(write_transaction()).await?;
                // A reset like `setPassword`: whoever held the old password is signed out.
                end_every_token(&txn, user.id).await?;
                let mut active: user::ActiveModel = user.into();
                active.password_hash = Set(hash);
                active.is_active = Set(true);
                let updated = active.update(&txn).await?;
                txn.commit().await?;
                Ok(updated)
            }
            Some(_) => Err(AppError::Duplicate {
                field: "username".into(),
                value: name,
            }),
        }
    }

    /// On a database with no admin, creates `admin` with a random password and returns the
    /// credentials so the caller can show them once; `None` when an admin exists.
    pub async fn bootstrap_admin(&self) -> AppResult<Option<(String, String)>> {
        let any_admin = user::Entity::find()
            .filter(user::Column::Role.eq(UserRole::Admin))
            .one(&self.db)
            .await?;
        if any_admin.is_some() {
            return Ok(None);
        }
        let password = crate::auth::random_token(12);
        match self
            .create_admin(&Principal::System, "admin", &password)
            .await
        {
            Ok(_) => Ok(Some(("admin".into(), password))),
            // Another process created it first.
            Err(AppError::Duplicate { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// One page of accounts, optionally of one role (admins only). Devices have keys, not
    /// accounts, so `Role::Device` lists none.
    pub async fn users(
        &self,
        actor: &Principal,
        role: Option<Role>,
        page: PageRequest,
    ) -> AppResult<Page<user::Model>> {
        access::require_admin(actor)?;
        let query = user::Entity::find().apply_if(role, |q, role| match role {
            Role::Admin => q.filter(user::Column::Role.eq(UserRole::Admin)),
            Role::Teacher => q.filter(user::Column::Role.eq(UserRole::Teacher)),
            // An empty "any" is false.
            Role::Device => q.filter(Condition::any()),
        });
        paginate(&self.db, query, user::Column::Id, page).await
    }

    /// Activates or deactivates an account. Deactivation ends every token of the account at
    /// once, so even after re-activation only a new login works. The last active admin
    /// cannot be deactivated (CONFLICT `LAST_ADMIN`): nobody could manage the school.
    pub async fn set_user_active(
        &self,
        actor: &Principal,
        user_id: i32,
        active: bool,
    ) -> AppResult<user::Model> {
        access::require_admin(actor)?;
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let existing = user::Entity::find_by_id(user_id)
            .one(&txn)
            .await?
            .ok_or(AppError::NotFound("user"))?;
        if !active && existing.is_active && existing.role == UserRole::Admin {
            // Locking every active admin serialises concurrent deactivations, so two admins
            // cannot switch each other off at once (SQLite's write lock already does).
            let mut admins = user::Entity::find()
                .select_only()
                .column(user::Column::Id)
                .filter(user::Column::Role.eq(UserRole::Admin))
                .filter(user::Column::IsActive.eq(true));
            if txn.get_database_backend() == DbBackend::Postgres {
                admins = admins.lock_exclusive();
            }
            let admins: Vec<i32> = admins.into_tuple().all(&txn).await?;
            if !admins.iter().any(|id| *id != user_id) {
                return Err(AppError::rejected(
                    Reason::LastAdmin,
                    "this is the last active admin; make another admin first",
                ));
            }
        }
        let mut model: user::ActiveModel = existing.into();
        model.is_active = Set(active);
        if !active {
            end_every_token(&txn, user_id).await?;
        }
        let updated = model.update(&txn).await?;
        txn.commit().await?;
        Ok(updated)
    }

    /// Changes the caller's own password. A wrong current password is refused like a
    /// failed login (UNAUTHENTICATED) and counts toward the same lockout; while locked out
    /// even the right one is refused. Every token of the account ends, the caller's too:
    /// the client logs in again with the new password.
    pub async fn change_password(
        &self,
        actor: &Principal,
        current: &str,
        new: &str,
        address: Option<IpAddr>,
    ) -> AppResult<()> {
        let account = self.viewer(actor).await?;
        let attempt = self
            .limiter
            .attempt(&self.writer, &account.username, address)
            .await?;
        if attempt == Attempt::Refused {
            return Err(AppError::rejected(
                Reason::RateLimited,
                "too many failed attempts; try again later",
            ));
        }
        let stored = Some(account.password_hash.clone());
        if !password::verify(current.to_owned(), stored).await? {
            return Err(invalid_credentials());
        }
        self.limiter
            .succeeded(&self.writer, &account.username, address)
            .await?;
        check_password("newPassword", new)?;
        self.replace_password(account, new).await
    }

    /// Sets any account's password (admins only), ending its tokens and clearing its
    /// failed-login count.
    pub async fn set_password(&self, actor: &Principal, user_id: i32, new: &str) -> AppResult<()> {
        access::require_admin(actor)?;
        check_password("newPassword", new)?;
        let account = user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("user"))?;
        self.replace_password(account, new).await
    }

    async fn replace_password(&self, account: user::Model, new: &str) -> AppResult<()> {
        let hash = password::hash(new.to_owned()).await?;
        let username = account.username.clone();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .filter(user::Column::Id.eq(account.id))
            .exec(&txn)
            .await?;
        end_every_token(&txn, account.id).await?;
        self.limiter.forget_user(&txn, &username).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Loads the account of a principal (for `me`).
    pub async fn viewer(&self, principal: &Principal) -> AppResult<user::Model> {
        let user_id = principal.user_id().ok_or(AppError::Forbidden)?;
        user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or(AppError::Unauthenticated)
    }
}

/// Ends every token of an account at once: raising its token version fails the access
/// tokens issued before (each request reads the account anyway), and the refresh tokens
/// are revoked. The increment is one statement, so concurrent raises are never lost.
async fn end_every_token(db: &impl ConnectionTrait, user_id: i32) -> AppResult<()> {
    user::Entity::update_many()
        .col_expr(
            user::Column::TokenVersion,
            Expr::col(user::Column::TokenVersion).add(1),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(now()))
        .filter(refresh_token::Column::UserId.eq(user_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}
