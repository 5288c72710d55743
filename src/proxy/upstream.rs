//! The origin's addresses. `FORWARD_DESTINATION` is resolved at start; a host
//! name is resolved again every `UPSTREAM_DNS_TTL_S` and soon after a connect
//! failure, by one resolver thread (DNS lookups block, so never on a core).
//! Cores read the address list through a generation counter and only take
//! the lock when it changed.

use crate::config::Destination;
use crate::{info, warn};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// The origin and its current addresses.
pub struct Upstream {
    pub dest: Destination,
    addrs: RwLock<Arc<Vec<SocketAddr>>>,
    generation: AtomicU64,
    refresh: Option<Sender<()>>,
}

fn resolve(dest: &Destination) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = dest.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, dest.port)]);
    }
    let addrs: Vec<SocketAddr> = (dest.host.as_str(), dest.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", dest.host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{} has no addresses", dest.host));
    }
    Ok(addrs)
}

impl Upstream {
    /// Resolves the destination now (start-up fails when it cannot) and
    /// starts the resolver thread for host names.
    pub fn start(dest: Destination, ttl: Duration) -> Result<Arc<Upstream>, String> {
        let addrs = resolve(&dest)?;
        let is_literal = dest.host.parse::<IpAddr>().is_ok();
        let (tx, rx) = bounded::<()>(1);
        let up = Arc::new(Upstream {
            dest,
            addrs: RwLock::new(Arc::new(addrs)),
            generation: AtomicU64::new(1),
            refresh: (!is_literal).then_some(tx),
        });
        if !is_literal {
            let weak = Arc::downgrade(&up);
            std::thread::Builder::new()
                .name("tg-resolver".into())
                .spawn(move || resolver(weak, rx, ttl))
                .map_err(|e| format!("cannot start the resolver thread: {e}"))?;
        }
        Ok(up)
    }

    /// Changes whenever the address list changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        match self.addrs.read() {
            Ok(a) => Arc::clone(&a),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Asks the resolver to look the name up again soon (after a connect
    /// failure). Never blocks.
    pub fn refresh_soon(&self) {
        if let Some(tx) = &self.refresh {
            let _ = tx.try_send(());
        }
    }
}

fn resolver(up: Weak<Upstream>, rx: Receiver<()>, ttl: Duration) {
    loop {
        match rx.recv_timeout(ttl) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(up) = up.upgrade() else { return };
        match resolve(&up.dest) {
            Ok(new) => {
                let changed = *up.addrs() != new;
                if changed {
                    info!(
                        "origin addresses changed",
                        host = up.dest.host,
                        addrs = format!("{new:?}")
                    );
                    if let Ok(mut a) = up.addrs.write() {
                        *a = Arc::new(new);
                    }
                    up.generation.fetch_add(1, Ordering::Release);
                }
            }
            Err(e) => warn!(
                "origin re-resolution failed; keeping the last addresses",
                error = e
            ),
        }
    }
}
