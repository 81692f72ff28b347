//! The login rate limiter: a fixed window of failed logins per username and per client
//! address, kept in this process's memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Fixed-window limiter on failed logins, keyed by username and by client address, so
/// neither guessing one account's password nor spraying many accounts is fast. An address
/// gets a larger budget than an account because many people can share one (NAT, proxy).
pub struct LoginLimiter {
    per_user: u32,
    per_address: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (Instant, u32)>>,
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
        let per_user = max_failures_per_minute.max(1);
        LoginLimiter {
            per_user,
            per_address: per_user * 5,
            window: Duration::from_secs(60),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Err(seconds to wait) when the account or the address is over its limit.
    pub fn check(&self, keys: &LoginKeys) -> Result<(), u64> {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        failures.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        for (key, limit) in [(&keys.user, self.per_user), (&keys.address, self.per_address)] {
            if let Some((start, count)) = failures.get(key)
                && *count >= limit
            {
                let wait = self.window.saturating_sub(now.duration_since(*start));
                return Err(wait.as_secs().max(1));
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, keys: &LoginKeys) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        for key in [&keys.user, &keys.address] {
            failures.entry(key.clone()).or_insert((now, 0)).1 += 1;
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn record_success(&self, keys: &LoginKeys) {
        self.failures.lock().expect("limiter lock").remove(&keys.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_max_failures() {
        let limiter = LoginLimiter::new(2);
        let keys = LoginKeys::new("a", "10.0.0.1");
        assert!(limiter.check(&keys).is_ok());
        limiter.record_failure(&keys);
        limiter.record_failure(&keys);
        assert!(limiter.check(&keys).is_err());
        // Another account from the same address still has budget (address limit is 10).
        assert!(limiter.check(&LoginKeys::new("b", "10.0.0.1")).is_ok());
        for _ in 0..8 {
            limiter.record_failure(&LoginKeys::new("c", "10.0.0.1"));
        }
        assert!(limiter.check(&LoginKeys::new("d", "10.0.0.1")).is_err());
    }
}
