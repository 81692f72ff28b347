//! How several servers on one database divide the work between them: each server process
//! has an instance name, and named leases kept in the database say which one does a job
//! that must happen once (the scheduler). A lease is held until it expires and renewed by
//! its holder; when the holder dies, another server takes it over once it has expired.

use crate::args;
use crate::error::ApiResult;
use crate::store::{Db, now_ms};

/// A name for this server process, unique among the servers sharing a database: the host,
/// the process id and a random part (a restarted server is a new instance).
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>())
}

/// Takes or renews the lease `name` for `holder` for `ttl_ms`; true when `holder` has it
/// now. One statement, so two servers asking at once cannot both get it.
pub async fn hold_lease(db: &Db, name: &str, holder: &str, ttl_ms: i64) -> ApiResult<bool> {
    let now = now_ms();
    let taken = db
        .execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
            args![name, holder, now + ttl_ms, now],
        )
        .await?;
    Ok(taken == 1)
}

/// Gives the lease up (on shutdown), so another server need not wait for it to expire.
pub async fn release_lease(db: &Db, name: &str, holder: &str) -> ApiResult<()> {
    db.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", args![name, holder]).await?;
    Ok(())
}
