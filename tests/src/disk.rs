//! A small disk that fills up for real: a tmpfs of a few MiB mounted on a
//! temporary folder (tests run as root on these machines), for the faults
//! of a full filesystem.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB.
    pub fn mount(mib: u32) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("weir-disk-").tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "cannot mount a tmpfs on {} ({status}): these tests need root",
            dir.path().display()
        );
        let filler = dir.path().join("filler");
        Ok(Self { dir, filler })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    pub fn fill(&self) -> anyhow::Result<()> {
        let mut file = std::fs::File::create(&self.filler)?;
        let block = vec![0xa5_u8; 64 * 1024];
        // Bounded: a tmpfs of a few MiB is full long before.
        for _ in 0..16_384 {
            if let Err(err) = file.write_all(&block).and_then(|()| file.sync_all()) {
                anyhow::ensure!(
                    err.raw_os_error() == Some(28),
                    "filling {}: {err}",
                    self.path().display()
                );
                return Ok(());
            }
        }
        anyhow::bail!("{} did not fill up", self.path().display())
    }

    /// Remounts the filesystem read-only, or writable again (read-only
    /// only while no file on it is open for writing).
    pub fn set_read_only(&self, read_only: bool) -> anyhow::Result<()> {
        let mode = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let status = Command::new("mount")
            .args(["-o", mode])
            .arg(self.path())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "mount -o {mode} {} failed ({status})",
            self.path().display()
        );
        Ok(())
    }

    /// Frees what [`SmallDisk::fill`] took.
    pub fn free(&self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.filler)?;
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process still holding a file open must not keep it mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
