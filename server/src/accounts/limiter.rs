//! The login rate limiter: a fixed window of failed logins per username and per client
//! address, kept in the database (`login_failures`) so that it holds across every server
//! sharing it: a guesser cannot multiply the budget by spreading attempts over servers.

use crate::args;
use crate::error::ApiResult;
use crate::store::{Db, now_ms};

/// Fixed-window limiter on failed logins, keyed by username and by client address, so
/// neither guessing one account's password nor spraying many accounts is fast. An address
/// gets a larger budget than an account because many people can share one (NAT, proxy).
pub struct LoginLimiter {
    per_user: i64,
    per_address: i64,
    window_ms: i64,
}

/// Limiter keys of one login attempt.
pub struct LoginKeys {
    user: String,
    address: String,
}

impl LoginKeys {
    pub fn new(username: &str, address: &str) -> LoginKeys {
        LoginKeys { user: format!("user:{username}"), address: format!("addr:{address}") }
    }
}

impl LoginLimiter {
    pub fn new(max_failures_per_minute: u32) -> LoginLimiter {
        let per_user = i64::from(max_failures_per_minute.max(1));
        LoginLimiter { per_user, per_address: per_user * 5, window_ms: 60_000 }
    }

    /// Err(seconds to wait) when the account or the address is over its limit.
    pub async fn check(&self, db: &Db, keys: &LoginKeys) -> ApiResult<Result<(), u64>> {
        let now = now_ms();
        let rows = db
            .fetch_all(
                "SELECT key, window_start, failures FROM login_failures WHERE key IN ($1, $2) AND window_start > $3",
                args![&keys.user, &keys.address, now - self.window_ms],
            )
            .await?;
        for row in rows {
            let limit = if row.text("key")? == keys.user { self.per_user } else { self.per_address };
            if row.int("failures")? >= limit {
                let wait_ms = row.int("window_start")? + self.window_ms - now;
                return Ok(Err((wait_ms.max(0) as u64).div_ceil(1000).max(1)));
            }
        }
        Ok(Ok(()))
    }

    /// Counts a failure against both keys: the first failure of a window starts it. Windows
    /// that have ended are swept in the same transaction, so the table holds at most one
    /// window's worth of keys.
    pub async fn record_failure(&self, db: &Db, keys: &LoginKeys) -> ApiResult<()> {
        let (user, address, window_ms) = (keys.user.clone(), keys.address.clone(), self.window_ms);
        db.transact(crate::store::tx_body(move |tx| {
            let (user, address) = (user.clone(), address.clone());
            Box::pin(async move {
                let now = now_ms();
                for key in [user, address] {
                    tx.execute(
                        "INSERT INTO login_failures (key, window_start, failures) VALUES ($1, $2, 1) \
                         ON CONFLICT (key) DO UPDATE SET \
                         failures = CASE WHEN login_failures.window_start <= $3 THEN 1 \
                                    ELSE login_failures.failures + 1 END, \
                         window_start = CASE WHEN login_failures.window_start <= $3 THEN $2 \
                                        ELSE login_failures.window_start END",
                        args![key, now, now - window_ms],
                    )
                    .await?;
                }
                tx.execute("DELETE FROM login_failures WHERE window_start <= $1", args![now - window_ms]).await?;
                Ok::<_, crate::error::ApiError>(())
            })
        }))
        .await
    }

    /// A successful login clears the account's failures (not the address's).
    pub async fn record_success(&self, db: &Db, keys: &LoginKeys) -> ApiResult<()> {
        db.execute("DELETE FROM login_failures WHERE key = $1", args![&keys.user]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbSettings;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limiter_blocks_after_max_failures() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        let db =
            Db::connect(&DbSettings { url, max_connections: 2, sqlite_synchronous: "normal".into() }).await.unwrap();
        let limiter = LoginLimiter::new(2);
        let keys = LoginKeys::new("a", "10.0.0.1");
        assert!(limiter.check(&db, &keys).await.unwrap().is_ok());
        limiter.record_failure(&db, &keys).await.unwrap();
        limiter.record_failure(&db, &keys).await.unwrap();
        let wait = limiter.check(&db, &keys).await.unwrap().unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        // Another account from the same address still has budget (address limit is 10).
        assert!(limiter.check(&db, &LoginKeys::new("b", "10.0.0.1")).await.unwrap().is_ok());
        for _ in 0..8 {
            limiter.record_failure(&db, &LoginKeys::new("c", "10.0.0.1")).await.unwrap();
        }
        assert!(limiter.check(&db, &LoginKeys::new("d", "10.0.0.1")).await.unwrap().is_err());
        // A success clears the account, not the address.
        limiter.record_success(&db, &keys).await.unwrap();
        assert!(limiter.check(&db, &LoginKeys::new("a", "10.0.0.2")).await.unwrap().is_ok());
        assert!(limiter.check(&db, &keys).await.unwrap().is_err());
        // An ended window starts over.
        let old = now_ms() - 61_000;
        db.execute("UPDATE login_failures SET window_start = $1", args![old]).await.unwrap();
        assert!(limiter.check(&db, &keys).await.unwrap().is_ok());
        limiter.record_failure(&db, &keys).await.unwrap();
        let failures = db.fetch_one("SELECT failures FROM login_failures WHERE key = 'user:a'", vec![]).await.unwrap();
        assert_eq!(failures.int("failures").unwrap(), 1, "a new window");
        db.close().await;
    }
}
