//! Who is calling: roles, principals, passwords, JWTs, device keys, and the extractor that
//! reads credentials off a request.

pub mod extract;
pub mod jwt;
pub mod password;

use sha2::{Digest, Sha256};

use crate::entities::UserRole;

/// Every device key starts with this, and no JWT ever does, so one header serves both.
pub const DEVICE_KEY_PREFIX: &str = "attdev_";

/// The three roles of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Full access.
    Admin,
    /// Reads the directory and runs their own sessions.
    Teacher,
    /// Submits scans, reads nothing.
    Device,
}

impl From<UserRole> for Role {
    fn from(role: UserRole) -> Self {
        match role {
            UserRole::Admin => Role::Admin,
            UserRole::Teacher => Role::Teacher,
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A person logged in with a JWT.
    User {
        /// `app_user.id`.
        user_id: i32,
        /// Admin or teacher.
        role: Role,
        /// The teacher row of a teacher account.
        teacher_id: Option<i32>,
    },
    /// The server itself or its operator at the command line (migrations, `create-admin`,
    /// imports, the jobs that close sessions and open classes): acts with an admin's
    /// rights, and is no account, so nothing it does names a user.
    System,
    /// A terminal authenticated by its API key.
    Device {
        /// `device.id` (the row id, not the device code).
        id: i32,
        /// The SHA-256 of the key it presented, which scans re-check in SQL.
        key_hash: String,
    },
}

impl Principal {
    /// The role of this caller.
    pub fn role(&self) -> Role {
        match self {
            Self::User { role, .. } => *role,
            Self::System => Role::Admin,
            Self::Device { .. } => Role::Device,
        }
    }

    /// The device row and presented key hash of a device, `None` for anyone else.
    pub fn device(&self) -> Option<(i32, &str)> {
        match self {
            Self::Device { id, key_hash } => Some((*id, key_hash)),
            Self::User { .. } | Self::System => None,
        }
    }

    /// True for admins.
    pub fn is_admin(&self) -> bool {
        self.role() == Role::Admin
    }

    /// The teacher row of a teacher account, `None` for anyone else.
    pub fn teacher_id(&self) -> Option<i32> {
        match self {
            Self::User {
                role: Role::Teacher,
                teacher_id,
                ..
            } => *teacher_id,
            _ => None,
        }
    }

    /// The user id of a person, `None` for devices and the system.
    pub fn user_id(&self) -> Option<i32> {
        match self {
            Self::User { user_id, .. } => Some(*user_id),
            Self::System | Self::Device { .. } => None,
        }
    }
}

/// A hex string of `bytes` random bytes from the OS-seeded generator.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    hex::encode(buf)
}

/// A fresh device key: the prefix plus 256 random bits.
pub fn new_device_key() -> String {
    format!("{DEVICE_KEY_PREFIX}{}", random_token(32))
}

/// SHA-256 in hex. Right for high-entropy secrets (device keys, refresh tokens), where a
/// slow password hash would only cost time on every request.
pub fn fast_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_carry_the_prefix_and_256_random_bits() {
        let a = new_device_key();
        let b = new_device_key();
        assert!(a.starts_with(DEVICE_KEY_PREFIX));
        assert_eq!(a.len(), DEVICE_KEY_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(fast_hash(&a).len(), 64);
    }
}
