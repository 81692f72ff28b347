//! Accounts: users and their roles, passwords (argon2id), login sessions and API tokens
//! (only their SHA-256 is stored, so a leaked database leaks no usable credential), and the
//! login rate limiter. The HTTP side (cookies, extractors, routes) lives in `http`.

pub mod limiter;
pub mod passwords;
pub mod sessions;
pub mod tokens;
pub mod users;

pub use pairwise_api::accounts::{CurrentUser, Role};
pub use passwords::hash_password;
pub use sessions::sha256_hex;
pub use tokens::TOKEN_PREFIX;

use crate::error::{ApiError, ApiResult};
use crate::store::SqlRow;

/// Refuses a caller who is not an admin.
pub fn require_admin(user: &CurrentUser) -> ApiResult<()> {
    if user.is_admin() { Ok(()) } else { Err(ApiError::forbidden("this action needs the admin role")) }
}

/// The `role` column of a users row.
fn role_of(row: &SqlRow) -> ApiResult<Role> {
    let role = row.text("role")?;
    Ok(Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?)
}
