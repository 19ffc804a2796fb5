//! SQLite's default page cache with one cost taken out: the end of a transaction that split a
//! b-tree page no longer visits every page in the cache.
//!
//! When SQLite rebalances a b-tree it swaps two pages' numbers through a temporary one, the
//! number of the page that holds the file locks (1 GiB into the file: 524,289 with 2 KiB pages).
//! The default cache (`pcache1`) remembers the highest number it has ever held, and at the end
//! of every transaction SQLite asks it to drop the pages past the end of the database. With that
//! temporary number remembered, the cache looks through every hash bucket and every page header
//! to find nothing to drop, at the end of every transaction in which a page split: about one
//! commit in seven with one agent at a time, nearly every commit of a batch of many. The cost
//! grows with the cache: about 1,000 page headers for the default 2 MiB of 2 KiB pages, and a
//! larger cache for the writer measured slower for it.
//!
//! [`install`] puts a thin layer over the default cache: it keeps its own bound of the page
//! numbers held, not counting a page parked on the lock page's number, and passes a truncation
//! on only when some page could be at or past it. Every call is otherwise the default cache's.

use std::ffi::{c_int, c_uint, c_void};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// SQLite's `PENDING_BYTE`: the first byte of the locking range, whose page no table ever uses.
const PENDING_BYTE: c_uint = 0x4000_0000;

/// Installs the layer for every connection this process opens, if SQLite has not been
/// initialized yet (its configuration is fixed from then on). Returns whether it is in place.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let mut default = MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
        // SAFETY: GETPCACHE2 writes the current page cache's methods into the struct it is
        // given; PCACHE2 copies the struct it is given. Both refuse (SQLITE_MISUSE) once SQLite
        // is initialized, leaving the default cache in place.
        unsafe {
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, default.as_mut_ptr())
                != ffi::SQLITE_OK
            {
                return false;
            }
            let default = default.assume_init();
            let complete = default.xCreate.is_some()
                && default.xCachesize.is_some()
                && default.xPagecount.is_some()
                && default.xFetch.is_some()
                && default.xUnpin.is_some()
                && default.xRekey.is_some()
                && default.xTruncate.is_some()
                && default.xDestroy.is_some()
                && default.xShrink.is_some();
            if !complete {
                return false;
            }
            let default = DEFAULT.get_or_init(|| DefaultCache(default));
            let layered = ffi::sqlite3_pcache_methods2 {
                iVersion: default.0.iVersion,
                pArg: std::ptr::null_mut(),
                xInit: Some(init),
                xShutdown: Some(shutdown),
                xCreate: Some(create),
                xCachesize: Some(cachesize),
                xPagecount: Some(pagecount),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
            };
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &layered) == ffi::SQLITE_OK
        }
    })
}

/// Truncations passed on to the default cache and truncations skipped, over the process.
static PASSED: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);
/// Pages renumbered to the lock page's number, over the process.
static PARKED: AtomicU64 = AtomicU64::new(0);

/// What the layer has seen since the process started: truncations it passed on to the default
/// cache, truncations it skipped, and pages parked on the lock page's number.
pub fn stats() -> Stats {
    Stats {
        passed: PASSED.load(Ordering::Relaxed),
        skipped: SKIPPED.load(Ordering::Relaxed),
        parked: PARKED.load(Ordering::Relaxed),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub passed: u64,
    pub skipped: u64,
    pub parked: u64,
}

/// The default page cache's methods, called by the layer.
struct DefaultCache(ffi::sqlite3_pcache_methods2);
// SAFETY: plain function pointers and the default cache's global argument, which SQLite itself
// shares across threads (it is built threadsafe).
unsafe impl Send for DefaultCache {}
unsafe impl Sync for DefaultCache {}

static DEFAULT: OnceLock<DefaultCache> = OnceLock::new();

fn default() -> &'static ffi::sqlite3_pcache_methods2 {
    &DEFAULT.get().expect("installed before any cache exists").0
}

/// One cache: the default cache's, and what the layer knows of the page numbers in it. Used by
/// one connection at a time, as SQLite uses every cache.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// Every page held has a number at or below this, except pages parked on `lock_page`.
    max_key: c_uint,
    /// The number SQLite parks a page on while it swaps two pages' numbers.
    lock_page: c_uint,
    /// Pages renumbered to `lock_page` and not renumbered away since.
    parked: u32,
}

unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    &mut *(p as *mut Cache)
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    let d = default();
    d.xInit.map_or(ffi::SQLITE_OK, |f| f(d.pArg))
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    let d = default();
    if let Some(f) = d.xShutdown {
        f(d.pArg);
    }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let inner = (default().xCreate.expect("checked at install"))(page_size, extra, purgeable);
    if inner.is_null() {
        return inner;
    }
    let lock_page = PENDING_BYTE / (page_size.max(1) as c_uint) + 1;
    Box::into_raw(Box::new(Cache {
        inner,
        max_key: 0,
        lock_page,
        parked: 0,
    })) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    (default().xCachesize.expect("checked at install"))(cache(p).inner, pages);
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    (default().xPagecount.expect("checked at install"))(cache(p).inner)
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let c = cache(p);
    let page = (default().xFetch.expect("checked at install"))(c.inner, key, create);
    if !page.is_null() {
        c.max_key = c.max_key.max(key);
    }
    page
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    (default().xUnpin.expect("checked at install"))(cache(p).inner, page, discard);
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let c = cache(p);
    (default().xRekey.expect("checked at install"))(c.inner, page, old, new);
    if new == c.lock_page {
        c.parked += 1;
        PARKED.fetch_add(1, Ordering::Relaxed);
    } else {
        c.max_key = c.max_key.max(new);
    }
    if old == c.lock_page {
        c.parked = c.parked.saturating_sub(1);
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = cache(p);
    let parked_dropped = c.parked > 0 && limit <= c.lock_page;
    if limit > c.max_key && !parked_dropped {
        // No page is numbered `limit` or higher: nothing to drop.
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    PASSED.fetch_add(1, Ordering::Relaxed);
    (default().xTruncate.expect("checked at install"))(c.inner, limit);
    c.max_key = c.max_key.min(limit.saturating_sub(1));
    if limit <= c.lock_page {
        c.parked = 0;
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    let c = Box::from_raw(p as *mut Cache);
    (default().xDestroy.expect("checked at install"))(c.inner);
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    (default().xShrink.expect("checked at install"))(cache(p).inner);
}
