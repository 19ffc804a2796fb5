//! The open-file limit. Every connection costs a descriptor, and the usual soft limit (1024) is far
//! below what a server needs, so it is raised to the hard limit at start; the connection cap is then
//! kept below it, so accepting never fails for want of descriptors.

/// Descriptors kept for everything but connections: the database and its journal files, the
/// listener, the runtime's own.
const RESERVED: u64 = 64;

/// Raises the soft open-file limit to the hard one (logging the result) and returns `wanted`, or
/// less if the limit cannot hold that many connections.
pub fn max_connections(wanted: usize) -> usize {
    let Some(limit) = raise() else {
        return wanted;
    };
    let fits = limit.saturating_sub(RESERVED).max(1);
    if (wanted as u64) <= fits {
        return wanted;
    }
    tracing::warn!(
        wanted,
        open_file_limit = limit,
        max_connections = fits,
        "--max-connections lowered to fit the open-file limit"
    );
    fits as usize
}

/// The soft limit after raising it, or `None` if it cannot be read.
fn raise() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot read the open-file limit"
        );
        return None;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot raise the open-file limit"
            );
        }
    }
    let now = lim.rlim_cur;
    if now > before {
        tracing::info!(from = before, to = now, "raised the open-file limit");
    } else {
        tracing::info!(open_file_limit = now, "open-file limit");
    }
    Some(now)
}
