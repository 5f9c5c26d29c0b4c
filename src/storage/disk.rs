//! The file operations the log makes, behind a trait so that tests can make
//! them fail (fault injection) and check that a failure latches the log.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// A file being appended to.
pub trait DiskFile: Send {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// fdatasync: the bytes written so far survive a power loss.
    fn sync_data(&mut self) -> io::Result<()>;
}

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
