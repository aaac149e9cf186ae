//! The roll call: sessions opened by hand and closed (by their teacher or by time), live and
//! buffered scans, reads, edits and deletions of records with their audit trail, and
//! excuses. It builds on the attendance core ([`super::attendance`]) and ends every change
//! with its consequences ([`super::integrations`]); it imports nothing else of the service.

pub mod excuses;
pub mod records;
pub mod scan;
pub mod sessions;
