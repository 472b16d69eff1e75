//! A small disk of the harness's own for SQLite runs: a tmpfs of [`DISK_BYTES`] mounted
//! in the harness's directory, so that "the disk is full" is a fault the harness can
//! strike and lift without touching the machine's own filesystems. Full means a filler
//! file written until the filesystem answers ENOSPC; lifting it deletes the filler.
//! Unmounted (lazily, so a process still holding a file does not keep it) when dropped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::ChaosError;
use crate::process::run_to_end;

/// The disk's size: room for a run's database and write-ahead log many times over.
pub(crate) const DISK_BYTES: u64 = 64 << 20;
/// The filler is written in chunks of this size until the disk refuses one.
const CHUNK: usize = 1 << 20;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A mounted tmpfs.
#[derive(Debug)]
pub(crate) struct Disk {
    mount: PathBuf,
    full: bool,
}

impl Disk {
    /// Mounts a tmpfs of [`DISK_BYTES`] at `mount` (created if missing).
    pub(crate) fn mount(mount: &Path) -> Result<Disk, ChaosError> {
        std::fs::create_dir_all(mount).map_err(|error| ChaosError::Io(error.to_string()))?;
        let mut command = Command::new("mount");
        command.args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES},mode=0755", DISK_BYTES = DISK_BYTES)]);
        command.arg("tmpfs").arg(mount);
        run_to_end("mount tmpfs", command, COMMAND_TIMEOUT)?;
        Ok(Disk { mount: mount.to_path_buf(), full: false })
    }

    /// Where files go.
    pub(crate) fn path(&self) -> &Path {
        &self.mount
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// Fills the disk: writes the filler until the filesystem refuses (bounded by the
    /// disk's size). Returns the bytes written.
    pub(crate) fn fill(&mut self) -> Result<u64, ChaosError> {
        let mut file = std::fs::File::create(self.filler()).map_err(|error| ChaosError::Io(error.to_string()))?;
        self.full = true;
        let chunk = vec![0_u8; CHUNK];
        let mut written = 0_u64;
        let mut size = CHUNK;
        // Whole chunks, then ever smaller ones, so the last free bytes are taken too.
        while written <= DISK_BYTES && size > 0 {
            match file.write(&chunk[..size]) {
                Ok(0) | Err(_) => size /= 2,
                Ok(n) => written += u64::try_from(n).unwrap_or(0),
            }
        }
        Ok(written)
    }

    /// Deletes the filler: the disk has room again.
    pub(crate) fn free(&mut self) -> Result<(), ChaosError> {
        if self.full {
            std::fs::remove_file(self.filler()).map_err(|error| ChaosError::Io(error.to_string()))?;
            self.full = false;
        }
        Ok(())
    }

    /// Whether it was left full.
    pub(crate) fn is_full(&self) -> bool {
        self.full
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let mut command = Command::new("umount");
        command.arg("-l").arg(&self.mount);
        let _ = run_to_end("umount", command, COMMAND_TIMEOUT);
    }
}
