//! The `device` table.

use sea_orm::entity::prelude::*;

use super::DeviceApproval;

/// A registered terminal; only a hash of its key is kept. ZKTeco push terminals are
/// devices too: they are known by their serial number and carry what they report.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "device")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[sea_orm(unique)]
    pub device_id: String,
    pub name: String,
    pub is_active: bool,
    #[sea_orm(unique)]
    pub key_hash: String,
    pub last_seen_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    #[sea_orm(unique)]
    pub serial_number: Option<String>,
    pub time_zone: Option<String>,
    pub approval: DeviceApproval,
    pub firmware_version: Option<String>,
    pub push_version: Option<String>,
    pub records_accepted: i64,
    pub records_duplicate: i64,
    pub records_rejected: i64,
    /// Until when (epoch milliseconds) one server process holds the right to judge this
    /// terminal's attendance lines; `service::terminals` alone reads and writes it.
    pub drain_lease_until: Option<i64>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
