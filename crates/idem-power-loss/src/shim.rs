//! The VFS shim itself: SQLite's C interface, and the crate's only unsafe code.
//!
//! The shim is a VFS of its own, [`NAME`], layered over the default VFS (on Linux,
//! `unix`) the way SQLite's own `vfstrace.c` and `test_vfs.c` are: each file SQLite opens
//! through the shim is a [`ShimFile`] header followed, in the same allocation, by the
//! default VFS's own file object, and every method is forwarded to that object with the
//! default VFS's methods. Locking, shared memory (`xShm*`), memory mapping and the rest
//! are therefore the default VFS's, unchanged, and processes sharing one file in WAL mode
//! coordinate exactly as without the shim. Only `xWrite`, `xTruncate` and `xSync` of
//! the database, `-wal` and `-journal` files do more: they go through
//! [`Journal`](crate::journal::Journal) first (safe Rust), which reads the bytes about
//! to be overwritten through [`RealFile`] and appends an undo record to the side file.
//!
//! Every unsafe block rests on SQLite's VFS contract (<https://sqlite.org/c3ref/vfs.html>,
//! <https://sqlite.org/c3ref/io_methods.html>): SQLite hands each method the objects it
//! was given by `xOpen` and `sqlite3_vfs_register`, calls no method of a file after its
//! `xClose`, and does not call methods of one file concurrently (a file belongs to one
//! connection, whose calls SQLite serialises).

use std::ffi::{CStr, OsStr, c_char, c_int, c_void};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, null_mut};
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

use crate::journal::{FileAccess, Journal, is_full, remove_side_file};
use crate::side::Placement;

/// The name the shim is registered under.
pub(crate) const NAME: &CStr = c"idem-unsynced-journal";

/// The files whose writes are journaled: the ones a power loss can take writes from
/// that SQLite relies on. Temporary files die with the process anyway.
const JOURNALED: c_int = ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_WAL | ffi::SQLITE_OPEN_MAIN_JOURNAL;

/// What SQLite allocates for each file opened through the shim: this header, then the
/// default VFS's file object at [`HEADER_LEN`] bytes (`szOsFile` covers both).
#[repr(C)]
struct ShimFile {
    /// SQLite's view of the file; must come first. `pMethods` is [`IO_METHODS`] once the
    /// default VFS opened the file, null otherwise.
    base: ffi::sqlite3_file,
    /// The default VFS's file object, inside the same allocation.
    real: *mut ffi::sqlite3_file,
    /// The side file, for database, `-wal` and `-journal` files.
    journal: Option<Box<Journal>>,
}

/// Where the default VFS's file object starts, rounded up to 8 for its alignment
/// (SQLite allocates file objects 8-aligned).
const HEADER_LEN: usize = size_of::<ShimFile>().next_multiple_of(8);

/// The shim's `pAppData`: what every VFS method needs besides its arguments. Leaked at
/// registration and never changed.
struct AppData {
    /// The default VFS the shim is layered over.
    root: *mut ffi::sqlite3_vfs,
    /// Where side files go.
    placement: Placement,
}

/// Registers the shim with side files where `placement` says, once per process: later
/// calls register nothing and return the first call's placement and outcome. It is not
/// made the default VFS: a connection uses it only when opened with its name.
pub(crate) fn register(placement: Placement) -> (&'static Placement, Result<(), c_int>) {
    static REGISTERED: OnceLock<(Placement, Result<(), c_int>)> = OnceLock::new();
    let (placement, outcome) = REGISTERED.get_or_init(|| (placement.clone(), register_once(placement)));
    (placement, *outcome)
}

fn register_once(placement: Placement) -> Result<(), c_int> {
    // SAFETY: a null name asks for the default VFS; this initialises SQLite if needed and
    // is thread-safe. The returned pointer is null or a registered VFS, which SQLite never
    // frees.
    let root = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if root.is_null() {
        return Err(ffi::SQLITE_ERROR);
    }
    // SAFETY: `root` is a registered VFS (above); its fields are not changed after
    // registration except `pNext`, which is not read here.
    let root_vfs = unsafe { &*root };
    let (root_file_len, max_path) = (root_vfs.szOsFile, root_vfs.mxPathname);
    let header_len = c_int::try_from(HEADER_LEN).map_err(|_| ffi::SQLITE_ERROR)?;
    let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: header_len + root_file_len,
        mxPathname: max_path,
        pNext: null_mut(),
        zName: NAME.as_ptr(),
        pAppData: ptr::from_mut(Box::leak(Box::new(AppData { root, placement }))).cast(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }));
    // SAFETY: `vfs` is leaked, so it lives (and stays at one address) for the rest of the
    // process, as SQLite requires of a registered VFS; registration is thread-safe, and
    // `register` runs this once per process.
    let code = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if code == ffi::SQLITE_OK { Ok(()) } else { Err(code) }
}

/// The shim's [`AppData`], kept in its `pAppData`.
///
/// # Safety
/// `vfs` must be the shim's registered VFS, as SQLite passes it to every VFS method.
unsafe fn app_data(vfs: *mut ffi::sqlite3_vfs) -> &'static AppData {
    // SAFETY: the caller passes the shim's VFS, whose fields SQLite does not change
    // after registration except `pNext`, not read here.
    let app_data = unsafe { (*vfs).pAppData }.cast::<AppData>();
    // SAFETY: `register_once` set `pAppData` to a leaked `AppData` that nothing changes
    // or frees.
    unsafe { &*app_data }
}

/// The default VFS the shim was layered over.
///
/// # Safety
/// As [`app_data`].
unsafe fn root(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: the caller's contract.
    unsafe { app_data(vfs) }.root
}

// ---- VFS methods: xOpen and xDelete do the shim's work, the rest forward. ----

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes the shim's VFS.
    let root = unsafe { root(vfs) };
    // SAFETY: `root` is the default VFS (above), never unregistered.
    let Some(open) = (unsafe { (*root).xOpen }) else {
        // SAFETY: `file` is SQLite's (uninitialised) file object, at least a
        // `sqlite3_file` long; a null `pMethods` tells SQLite there is nothing to close.
        unsafe { ptr::write(file, ffi::sqlite3_file { pMethods: ptr::null() }) };
        return ffi::SQLITE_CANTOPEN;
    };
    // SAFETY: `file` points to `szOsFile` bytes, so `HEADER_LEN` bytes in is still inside
    // the allocation, where the default VFS's `szOsFile` bytes fit.
    let real = unsafe { file.cast::<u8>().add(HEADER_LEN).cast::<ffi::sqlite3_file>() };
    let journal = if flags & JOURNALED != 0 && !name.is_null() {
        // SAFETY: a non-null name given to xOpen is a NUL-terminated path that outlives
        // the file.
        let path = Path::new(OsStr::from_bytes(unsafe { CStr::from_ptr(name) }.to_bytes()));
        // SAFETY: SQLite passes the shim's VFS.
        let placement = &unsafe { app_data(vfs) }.placement;
        let Ok(journal) = Journal::open(placement, path) else {
            // SAFETY: `file` is SQLite's (uninitialised) file object, at least a
            // `sqlite3_file` long; a null `pMethods` tells SQLite there is nothing to close.
            unsafe { ptr::write(file, ffi::sqlite3_file { pMethods: ptr::null() }) };
            return ffi::SQLITE_CANTOPEN;
        };
        Some(Box::new(journal))
    } else {
        None
    };
    let shim = file.cast::<ShimFile>();
    // SAFETY: `file` is 8-aligned and `szOsFile` covers the header; writing initialises
    // it without reading (or dropping) the uninitialised bytes.
    unsafe { ptr::write(shim, ShimFile { base: ffi::sqlite3_file { pMethods: ptr::null() }, real, journal }) };
    // SAFETY: forwarding xOpen's own arguments, with the default VFS and its own file
    // object, which has the `szOsFile` bytes that VFS asked for.
    let code = unsafe { open(root, name, real, flags, out_flags) };
    // SAFETY: the default VFS has set `real`'s `pMethods` (to its methods or null)
    // whatever the outcome, as its contract requires.
    if unsafe { (*real).pMethods }.is_null() {
        // SAFETY: `shim` was initialised above and is not aliased.
        unsafe { (*shim).journal = None };
    } else {
        // It may need closing even on failure; `x_close` forwards it.
        // SAFETY: as above.
        unsafe { (*shim).base.pMethods = &raw const IO_METHODS };
    }
    code
}

unsafe extern "C" fn x_delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    // SAFETY: SQLite passes the shim's VFS.
    let root = unsafe { root(vfs) };
    // SAFETY: `root` is the default VFS, never unregistered.
    let Some(delete) = (unsafe { (*root).xDelete }) else { return ffi::SQLITE_IOERR_DELETE };
    // SAFETY: forwarding xDelete's own arguments to the default VFS.
    let code = unsafe { delete(root, name, sync_dir) };
    if (code == ffi::SQLITE_OK || code == ffi::SQLITE_IOERR_DELETE_NOENT) && !name.is_null() {
        // SAFETY: a non-null name given to xDelete is a NUL-terminated path.
        let path = Path::new(OsStr::from_bytes(unsafe { CStr::from_ptr(name) }.to_bytes()));
        // SAFETY: SQLite passes the shim's VFS.
        let placement = &unsafe { app_data(vfs) }.placement;
        // The file is gone, and with it whatever its records would take back.
        if remove_side_file(placement, path).is_err() {
            return ffi::SQLITE_IOERR_DELETE;
        }
    }
    code
}

/// Forwards a VFS method that has nothing to do with files to the default VFS.
macro_rules! forward_vfs {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs, $($arg: $ty),*) -> $ret {
            // SAFETY: SQLite passes the shim's VFS.
            let root = unsafe { root(vfs) };
            // SAFETY: `root` is the default VFS, never unregistered.
            match unsafe { (*root).$field } {
                // SAFETY: forwarding the method's own arguments to the default VFS.
                Some(method) => unsafe { method(root, $($arg),*) },
                None => $missing,
            }
        }
    };
}

forward_vfs!(x_access, xAccess, (name: *const c_char, flags: c_int, out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_ACCESS);
forward_vfs!(x_full_pathname, xFullPathname, (name: *const c_char, n_out: c_int, out: *mut c_char) -> c_int, ffi::SQLITE_CANTOPEN);
forward_vfs!(x_dl_open, xDlOpen, (name: *const c_char) -> *mut c_void, null_mut());
forward_vfs!(x_dl_error, xDlError, (n_bytes: c_int, message: *mut c_char) -> (), ());
forward_vfs!(x_dl_close, xDlClose, (handle: *mut c_void) -> (), ());
forward_vfs!(x_randomness, xRandomness, (n_bytes: c_int, out: *mut c_char) -> c_int, 0);
forward_vfs!(x_sleep, xSleep, (micros: c_int) -> c_int, 0);
forward_vfs!(x_current_time, xCurrentTime, (out: *mut f64) -> c_int, ffi::SQLITE_ERROR);
forward_vfs!(x_get_last_error, xGetLastError, (n_bytes: c_int, out: *mut c_char) -> c_int, 0);
forward_vfs!(x_current_time_int64, xCurrentTimeInt64, (out: *mut ffi::sqlite3_int64) -> c_int, ffi::SQLITE_ERROR);

/// A symbol looked up in a loaded extension, as `xDlSym` returns it.
type DlSymbol = Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>;
forward_vfs!(x_dl_sym, xDlSym, (handle: *mut c_void, symbol: *const c_char) -> DlSymbol, None);

// ---- File methods. ----

/// Every file opened through the shim has these methods; all forward to the default
/// VFS's file object, the write, truncate and sync paths after journaling.
static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

/// The shim's header of an open file.
///
/// # Safety
/// `file` must be a file SQLite opened through the shim (so `x_open` initialised its
/// header and set `IO_METHODS`), not yet closed, and not used by another call meanwhile.
unsafe fn shim<'a>(file: *mut ffi::sqlite3_file) -> &'a ShimFile {
    // SAFETY: the caller's contract; `ShimFile` is `repr(C)` with `base` first.
    unsafe { &*file.cast::<ShimFile>() }
}

/// The default VFS's methods for its file object `real`.
///
/// # Safety
/// `real` must be an open file object of the default VFS.
unsafe fn methods<'a>(real: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: the caller passes an open file object.
    let methods = unsafe { (*real).pMethods };
    // SAFETY: an open file's `pMethods` is non-null (`x_open` installs `IO_METHODS`
    // only then) and points to the default VFS's static methods.
    unsafe { &*methods }
}

/// Forwards a file method unchanged to the default VFS's file object.
macro_rules! forward_file {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> $ret {
            // SAFETY: SQLite calls file methods only on files the shim opened, until
            // closed, one call at a time.
            let real = unsafe { shim(file) }.real;
            // SAFETY: `real` is the default VFS's open file object.
            match unsafe { methods(real) }.$field {
                // SAFETY: forwarding the method's own arguments to the default VFS's
                // file object.
                Some(method) => unsafe { method(real, $($arg),*) },
                None => $missing,
            }
        }
    };
}

forward_file!(x_read, xRead, (buf: *mut c_void, amount: c_int, offset: ffi::sqlite3_int64) -> c_int, ffi::SQLITE_IOERR_READ);
forward_file!(x_file_size, xFileSize, (size: *mut ffi::sqlite3_int64) -> c_int, ffi::SQLITE_IOERR_FSTAT);
forward_file!(x_lock, xLock, (level: c_int) -> c_int, ffi::SQLITE_IOERR_LOCK);
forward_file!(x_unlock, xUnlock, (level: c_int) -> c_int, ffi::SQLITE_IOERR_UNLOCK);
forward_file!(x_check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
forward_file!(x_file_control, xFileControl, (op: c_int, arg: *mut c_void) -> c_int, ffi::SQLITE_NOTFOUND);
forward_file!(x_sector_size, xSectorSize, () -> c_int, 4096);
forward_file!(x_device_characteristics, xDeviceCharacteristics, () -> c_int, 0);
forward_file!(x_shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR_SHMMAP);
forward_file!(x_shm_lock, xShmLock, (offset: c_int, count: c_int, flags: c_int) -> c_int, ffi::SQLITE_IOERR_SHMLOCK);
forward_file!(x_shm_barrier, xShmBarrier, () -> (), ());
forward_file!(x_shm_unmap, xShmUnmap, (delete: c_int) -> c_int, ffi::SQLITE_OK);
forward_file!(x_unfetch, xUnfetch, (offset: ffi::sqlite3_int64, page: *mut c_void) -> c_int, ffi::SQLITE_OK);

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: as in `forward_file!`.
    let real = unsafe { shim(file) }.real;
    // SAFETY: `real` is the default VFS's open file object.
    match unsafe { methods(real) }.xFetch {
        // SAFETY: forwarding xFetch's own arguments.
        Some(fetch) => unsafe { fetch(real, offset, amount, out) },
        None => {
            // SAFETY: `out` is SQLite's place for the page; null means "read it instead".
            unsafe { *out = null_mut() };
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `forward_file!`; this is the file's last call.
    let real = unsafe { shim(file) }.real;
    // SAFETY: `real` is the default VFS's open file object.
    let code = match unsafe { methods(real) }.xClose {
        // SAFETY: closing the default VFS's file object, once.
        Some(close) => unsafe { close(real) },
        None => ffi::SQLITE_OK,
    };
    // SAFETY: SQLite frees the allocation after xClose without running Rust's drops, so
    // the journal is dropped here; nothing reads the header afterwards.
    unsafe { (*file.cast::<ShimFile>()).journal = None };
    code
}

/// The default VFS's file object, read through its own methods for the journal.
struct RealFile(*mut ffi::sqlite3_file);

impl FileAccess for RealFile {
    fn size(&mut self) -> io::Result<u64> {
        let mut size: ffi::sqlite3_int64 = 0;
        // SAFETY: `RealFile` is only made in the write and truncate paths below, from an
        // open file object, for the length of that call.
        let file_size = unsafe { methods(self.0) }.xFileSize.ok_or_else(|| io::Error::other("no xFileSize"))?;
        // SAFETY: as above; `size` is a valid place for the result.
        let code = unsafe { file_size(self.0, &raw mut size) };
        if code != ffi::SQLITE_OK {
            return Err(io::Error::other(format!("xFileSize failed with {code}")));
        }
        u64::try_from(size).map_err(io::Error::other)
    }

    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let amount = c_int::try_from(buf.len()).map_err(io::Error::other)?;
        let offset = ffi::sqlite3_int64::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: as in `size`.
        let read = unsafe { methods(self.0) }.xRead.ok_or_else(|| io::Error::other("no xRead"))?;
        // SAFETY: `buf` is `amount` writable bytes.
        let code = unsafe { read(self.0, buf.as_mut_ptr().cast(), amount, offset) };
        if code != ffi::SQLITE_OK {
            return Err(io::Error::other(format!("xRead failed with {code}")));
        }
        Ok(())
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as in `forward_file!`.
    let shim = unsafe { shim(file) };
    // SAFETY: `shim.real` is the default VFS's open file object.
    let Some(write) = unsafe { methods(shim.real) }.xWrite else { return ffi::SQLITE_IOERR_WRITE };
    let held = match &shim.journal {
        None => None,
        Some(journal) => {
            let (Ok(at), Ok(length)) = (u64::try_from(offset), u64::try_from(amount)) else {
                return ffi::SQLITE_IOERR_WRITE;
            };
            match journal.before_write(&mut RealFile(shim.real), at, length) {
                Ok(held) => Some(held),
                Err(error) => return code_for(&error, ffi::SQLITE_IOERR_WRITE),
            }
        }
    };
    // SAFETY: forwarding xWrite's own arguments to the default VFS's file object.
    let code = unsafe { write(shim.real, buf, amount, offset) };
    drop(held);
    code
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: as in `forward_file!`.
    let shim = unsafe { shim(file) };
    // SAFETY: `shim.real` is the default VFS's open file object.
    let Some(truncate) = unsafe { methods(shim.real) }.xTruncate else { return ffi::SQLITE_IOERR_TRUNCATE };
    let held = match &shim.journal {
        None => None,
        Some(journal) => {
            let Ok(new_size) = u64::try_from(size) else { return ffi::SQLITE_IOERR_TRUNCATE };
            match journal.before_truncate(&mut RealFile(shim.real), new_size) {
                Ok(held) => Some(held),
                Err(error) => return code_for(&error, ffi::SQLITE_IOERR_TRUNCATE),
            }
        }
    };
    // SAFETY: forwarding xTruncate's own arguments to the default VFS's file object.
    let code = unsafe { truncate(shim.real, size) };
    drop(held);
    code
}

/// What SQLite hears when the side file fails a write or truncation: `SQLITE_FULL` when
/// the side file's filesystem is full (as a full disk would say to the write itself),
/// else the method's I/O error.
fn code_for(error: &io::Error, io_error: c_int) -> c_int {
    if is_full(error) { ffi::SQLITE_FULL } else { io_error }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as in `forward_file!`.
    let shim = unsafe { shim(file) };
    // SAFETY: `shim.real` is the default VFS's open file object.
    let Some(sync) = unsafe { methods(shim.real) }.xSync else { return ffi::SQLITE_IOERR_FSYNC };
    let Some(journal) = &shim.journal else {
        // SAFETY: forwarding xSync's own arguments to the default VFS's file object.
        return unsafe { sync(shim.real, flags) };
    };
    let Ok(held) = journal.before_sync() else { return ffi::SQLITE_IOERR_FSYNC };
    // SAFETY: as above.
    let code = unsafe { sync(shim.real, flags) };
    if code == ffi::SQLITE_OK && journal.synced().is_err() {
        return ffi::SQLITE_IOERR_FSYNC;
    }
    drop(held);
    code
}
