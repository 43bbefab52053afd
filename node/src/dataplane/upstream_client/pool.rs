//! The idle keep-alive connections of one worker thread, by target. Lives on its worker,
//! so taking and returning a connection never touches a lock or another thread.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::conn::Conn;

/// Idle connections are closed after this long: below common upstream idle timeouts
/// (5 s for actix-web, 60 s for nginx), so the pool rarely hands out a connection the
/// upstream is closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Most idle connections kept per target and worker; more are closed on return.
const MAX_IDLE_PER_TARGET: usize = 256;
/// How often idle connections past their time are closed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Idle connections by target authority, newest last.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<FxHashMap<Arc<str>, Vec<Conn>>>,
    sweeping: Cell<bool>,
}

impl Pool {
    /// Takes the most recently used live connection to `authority`, if any, as of `now`.
    pub fn take(&self, authority: &str, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let conns = idle.get_mut(authority)?;
        let mut conn = conns.pop()?;
        if now.saturating_duration_since(conn.idle_since) >= IDLE_TIMEOUT {
            // The rest went idle earlier still.
            conns.clear();
            return None;
        }
        conn.reused = true;
        Some(conn)
    }

    /// Files a connection whose last exchange ended cleanly, for the next request.
    pub fn put(self: &Rc<Self>, mut conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        conn.idle_since = Instant::now();
        {
            let mut idle = self.idle.borrow_mut();
            let conns = match idle.get_mut(&*conn.authority) {
                Some(conns) => conns,
                None => idle.entry(conn.authority.clone()).or_default(),
            };
            if conns.len() < MAX_IDLE_PER_TARGET {
                conns.push(conn);
            }
        }
        if !self.sweeping.replace(true) {
            actix_rt::spawn(sweep(Rc::downgrade(self)));
        }
    }

    /// Closes connections idle for too long; returns whether any stay.
    fn close_expired(&self) -> bool {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, conns| {
            conns.retain(|conn| conn.idle_since.elapsed() < IDLE_TIMEOUT);
            !conns.is_empty()
        });
        !idle.is_empty()
    }

    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

/// Closes expired connections while any are idle, then stops until the next return.
async fn sweep(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.close_expired() {
            pool.sweeping.set(false);
            return;
        }
    }
}
