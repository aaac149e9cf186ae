//! sea-orm entities: the tables as data, with no business logic.

pub mod attendance_record;
pub mod attendance_session;
pub mod attendance_warning;
pub mod class_cancellation;
pub mod class_not_opened;
pub mod course;
pub mod course_section;
pub mod dep_batch;
pub mod device;
pub mod excuse;
pub mod holiday;
pub mod login_throttle;
pub mod record_change;
pub mod refresh_token;
pub mod schedule_slot;
pub mod section;
pub mod student;
pub mod teacher;
pub mod term;
pub mod terminal_command;
pub mod terminal_punch;
pub mod terminal_stamp;
pub mod user;
pub mod warning_rule;
pub mod webhook;
pub mod webhook_attempt;
pub mod webhook_delivery;

use sea_orm::entity::prelude::*;

/// The status of a student in one session; the original design's three values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum AttendanceStatus {
    /// Scanned by the device (or set by a teacher).
    #[sea_orm(string_value = "present")]
    Present,
    /// Not scanned before the session closed (or set by a teacher).
    #[sea_orm(string_value = "absent")]
    Absent,
    /// Excused by a teacher.
    #[sea_orm(string_value = "permission")]
    Permission,
}

impl AttendanceStatus {
    /// The lower-case name stored in the database and used by the REST shim.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Absent => "absent",
            Self::Permission => "permission",
        }
    }
}

/// Where a webhook delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum DeliveryStatus {
    /// Waiting to be sent (or sent again).
    #[sea_orm(string_value = "pending")]
    Pending,
    /// The receiver answered 2xx.
    #[sea_orm(string_value = "delivered")]
    Delivered,
    /// Retried for 24 hours without success.
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Its webhook was deleted before it was delivered.
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl DeliveryStatus {
    /// The stored name, for statements that write or match it in SQL.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Which line an attendance warning crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum WarningKind {
    /// The attendance rate fell below the rule's minimum.
    #[sea_orm(string_value = "LOW_RATE")]
    LowRate,
    /// The student missed the rule's number of sessions in a row.
    #[sea_orm(string_value = "CONSECUTIVE_ABSENCES")]
    ConsecutiveAbsences,
}

impl WarningKind {
    /// The stored name (also the API's enum value).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LowRate => "LOW_RATE",
            Self::ConsecutiveAbsences => "CONSECUTIVE_ABSENCES",
        }
    }
}

/// How a record came to be, so later rules can tell a scan from an automatic absence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum RecordSource {
    /// Written by a device scan.
    #[sea_orm(string_value = "scan")]
    Scan,
    /// Written by closing the session.
    #[sea_orm(string_value = "auto_absent")]
    AutoAbsent,
    /// Written by a close for a student an excuse covered: permission instead of absent.
    #[sea_orm(string_value = "excuse")]
    Excuse,
}

impl RecordSource {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scan => "scan",
            Self::AutoAbsent => "auto_absent",
            Self::Excuse => "excuse",
        }
    }
}

/// What an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum ChangeKind {
    /// A person changed the record's status.
    #[sea_orm(string_value = "edit")]
    Edit,
    /// An admin deleted the record; the entry keeps its last status.
    #[sea_orm(string_value = "delete")]
    Delete,
    /// An excuse set the status (the entry names it).
    #[sea_orm(string_value = "excuse")]
    Excuse,
    /// A revoked excuse turned back the status it had set.
    #[sea_orm(string_value = "excuse_revoked")]
    ExcuseRevoked,
}

impl ChangeKind {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edit => "edit",
            Self::Delete => "delete",
            Self::Excuse => "excuse",
            Self::ExcuseRevoked => "excuse_revoked",
        }
    }
}

/// The role of an account that logs in with a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum UserRole {
    /// Full access.
    #[sea_orm(string_value = "admin")]
    Admin,
    /// Reads the directory, runs their own sessions.
    #[sea_orm(string_value = "teacher")]
    Teacher,
}

/// Whether an admin has admitted a device. Terminals that announce themselves over iclock
/// start pending; devices registered by an admin are approved from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum DeviceApproval {
    /// Seen, but not yet admitted: every request it makes is refused.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Admitted by an admin.
    #[sea_orm(string_value = "approved")]
    Approved,
}

/// What became of one attendance line a terminal uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum PunchOutcome {
    /// It created a `present` record.
    #[sea_orm(string_value = "accepted")]
    Accepted,
    /// It turned an automatic absence into `present`.
    #[sea_orm(string_value = "corrected")]
    Corrected,
    /// The student was already recorded in that session; nothing changed.
    #[sea_orm(string_value = "duplicate")]
    Duplicate,
    /// It was malformed or a rule refused it; kept for review.
    #[sea_orm(string_value = "rejected")]
    Rejected,
    /// Stored with a large upload, to be judged right after the reply.
    #[sea_orm(string_value = "pending")]
    Pending,
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveEnum, Iterable};

    use super::*;

    #[test]
    fn stored_statuses_and_kinds_read_back_and_nothing_else_does() {
        for status in DeliveryStatus::iter() {
            let stored = status.to_value();
            assert_eq!(stored, status.as_str());
            assert_eq!(DeliveryStatus::try_from_value(&stored).unwrap(), status);
        }
        for kind in WarningKind::iter() {
            let stored = kind.to_value();
            assert_eq!(stored, kind.as_str());
            assert_eq!(WarningKind::try_from_value(&stored).unwrap(), kind);
        }
        // No silent fallback: a value the code does not know is an error, not `Pending`.
        assert!(DeliveryStatus::try_from_value(&"sent".to_owned()).is_err());
        assert!(WarningKind::try_from_value(&"low_rate".to_owned()).is_err());
    }
}
