//! The file operations the log makes, behind a trait so that tests can make
//! them fail (fault injection) and check that a failure latches the log.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file being appended to.
pub trait DiskFile: Send {
    /// Writes at the append position and moves it on.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// fdatasync: the bytes written so far survive a power loss.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Writes `len` zero bytes from `offset` on, leaving the append
    /// position where it is (space written ahead, so that an append's
    /// sync need not also commit the file's new size and blocks).
    fn zero_fill(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Cuts the file at `len` bytes, durably (size included).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Zero bytes written per call by [`DiskFile::zero_fill`].
const ZERO_WRITE_BYTES: usize = 64 * 1024;
static ZEROS: [u8; ZERO_WRITE_BYTES] = [0; ZERO_WRITE_BYTES];

/// Creates files and makes directory entries durable.
pub trait Disk: Send + Sync + 'static {
    /// Creates a new file (an existing one is an error).
    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// fsync of a directory, so that created and renamed entries survive.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

struct RealFile(fs::File);

impl DiskFile for RealFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn zero_fill(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(ZERO_WRITE_BYTES as u64) as usize;
            self.0.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
}

impl Disk for RealDisk {
    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
