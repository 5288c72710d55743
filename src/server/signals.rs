//! Signals, handled synchronously: SIGTERM, SIGINT and SIGHUP are blocked in
//! every thread (the mask is set before any thread starts and inherited), and
//! the main thread takes them one at a time with `sigwait`. No async signal
//! handler ever runs, so nothing needs to be async-signal-safe.

use std::io;

/// What a received signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reopen the event file (logrotate).
    Reopen,
    /// SIGTERM or SIGINT: graceful shutdown.
    Stop(&'static str),
}

/// The blocked signal set.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and so in
    /// every thread it starts afterwards).
    pub fn block() -> io::Result<Signals> {
        // SAFETY: the set is initialised by sigemptyset before use, and
        // pthread_sigmask only reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Signals { set })
        }
    }

    /// Waits for the next signal.
    pub fn wait(&self) -> Signal {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` was initialised in `block`; `sig` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc != 0 {
                continue;
            }
            match sig {
                libc::SIGHUP => return Signal::Reopen,
                libc::SIGTERM => return Signal::Stop("SIGTERM"),
                libc::SIGINT => return Signal::Stop("SIGINT"),
                _ => continue,
            }
        }
    }
}
