//! The stored snapshot: one file beside the database, replaced atomically.
//!
//! A snapshot is the whole state, a hundred megabytes and more at a few hundred thousand
//! keys. Kept as a RocksDB value it was copied into a second buffer to be framed with its
//! metadata, copied again into a table file, and later rewritten by compaction: about
//! three quarters of the cost of a snapshot went there. As a file it is written once,
//! straight from the encoded state, and read back in one piece.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "CFSNAP01" | meta length: u64 | data length: u64 | CRC-32 of meta and data: u32
//! | meta (`cluster::wire` encoding of the SnapshotMeta) | data (the encoded State)
//! ```
//!
//! A new snapshot is written to a temporary file, synced, renamed over the old one, and
//! the directory synced: after a crash there is either the old snapshot or the new one,
//! whole. The checksum catches a file damaged on disk.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cluster::types::SnapshotMeta;
use cluster::wire;

const MAGIC: &[u8; 8] = b"CFSNAP01";
const HEADER_LEN: usize = 8 + 8 + 8 + 4;
/// A stored snapshot's metadata is a few hundred bytes (the membership); more means a
/// damaged header, not a snapshot.
const MAX_META_LEN: u64 = 16 * 1024 * 1024;
const FILE_NAME: &str = "state.snapshot";
const TEMPORARY_NAME: &str = "state.snapshot.tmp";

/// Why a stored snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the snapshot file does not start with the snapshot magic")]
    NotASnapshot,
    #[error("the snapshot file's lengths do not match its size ({0})")]
    BadLength(&'static str),
    #[error("the snapshot file's checksum does not match its contents")]
    Checksum,
    #[error("the snapshot's metadata does not decode: {0}")]
    Meta(#[from] wire::WireError),
}

/// Where a store keeps its snapshot file.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFile {
    dir: PathBuf,
}

struct Header {
    meta_len: u64,
    data_len: u64,
    checksum: u32,
}

impl SnapshotFile {
    /// The snapshot file of the store in `dir`.
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Replaces the stored snapshot with `meta` and `data`, durably.
    pub(crate) fn write(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), SnapshotFileError> {
        let meta = wire::encode(meta)?;
        let mut checksum = crc32fast::Hasher::new();
        checksum.update(&meta);
        checksum.update(data);
        let mut head = Vec::with_capacity(HEADER_LEN + meta.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        head.extend_from_slice(&(data.len() as u64).to_le_bytes());
        head.extend_from_slice(&checksum.finalize().to_le_bytes());
        head.extend_from_slice(&meta);

        let temporary = self.dir.join(TEMPORARY_NAME);
        let written = (|| {
            let mut file = File::create(&temporary)?;
            file.write_all(&head)?;
            file.write_all(data)?;
            file.sync_all()?;
            std::fs::rename(&temporary, self.path())?;
            File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        Ok(written?)
    }

    /// Returns the stored snapshot's metadata without reading its data.
    pub(crate) fn read_meta(&self) -> Result<Option<SnapshotMeta>, SnapshotFileError> {
        let Some(mut file) = self.open()? else {
            return Ok(None);
        };
        let header = read_header(&mut file)?;
        let mut meta = vec![0; header.meta_len as usize];
        file.read_exact(&mut meta).map_err(truncated)?;
        Ok(Some(wire::decode(&meta)?))
    }

    /// Returns the stored snapshot, its checksum verified.
    pub(crate) fn read(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotFileError> {
        let Some(mut file) = self.open()? else {
            return Ok(None);
        };
        let size = file.metadata()?.len();
        let header = read_header(&mut file)?;
        if size != HEADER_LEN as u64 + header.meta_len + header.data_len {
            return Err(SnapshotFileError::BadLength("size"));
        }
        let mut meta = vec![0; header.meta_len as usize];
        file.read_exact(&mut meta).map_err(truncated)?;
        let data_len = usize::try_from(header.data_len).map_err(|_| SnapshotFileError::BadLength("data"))?;
        let mut data = vec![0; data_len];
        file.read_exact(&mut data).map_err(truncated)?;
        let mut checksum = crc32fast::Hasher::new();
        checksum.update(&meta);
        checksum.update(&data);
        if checksum.finalize() != header.checksum {
            return Err(SnapshotFileError::Checksum);
        }
        Ok(Some((wire::decode(&meta)?, data)))
    }

    fn open(&self) -> Result<Option<File>, SnapshotFileError> {
        match File::open(self.path()) {
            Ok(file) => Ok(Some(file)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

fn read_header(file: &mut File) -> Result<Header, SnapshotFileError> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header).map_err(truncated)?;
    if &header[..8] != MAGIC {
        return Err(SnapshotFileError::NotASnapshot);
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let meta_len = word(8);
    if meta_len > MAX_META_LEN {
        return Err(SnapshotFileError::BadLength("meta"));
    }
    let mut checksum = [0u8; 4];
    checksum.copy_from_slice(&header[24..28]);
    Ok(Header {
        meta_len,
        data_len: word(16),
        checksum: u32::from_le_bytes(checksum),
    })
}

fn truncated(error: io::Error) -> SnapshotFileError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        SnapshotFileError::BadLength("truncated")
    } else {
        SnapshotFileError::Io(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::types::LogId;
    use openraft::CommittedLeaderId;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            snapshot_id: format!("snap-{index}"),
            ..Default::default()
        }
    }

    #[test]
    fn a_written_snapshot_reads_back_and_replaces_the_previous_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = SnapshotFile::in_dir(dir.path());
        assert!(file.read().expect("read").is_none(), "nothing stored yet");
        file.write(&meta(3), b"first").expect("write");
        file.write(&meta(7), b"second state").expect("write");
        let (stored_meta, data) = file.read().expect("read").expect("stored");
        assert_eq!(stored_meta, meta(7));
        assert_eq!(data, b"second state");
        assert_eq!(file.read_meta().expect("meta"), Some(meta(7)));
        assert!(!dir.path().join(TEMPORARY_NAME).exists());
    }

    #[test]
    fn a_damaged_snapshot_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = SnapshotFile::in_dir(dir.path());
        file.write(&meta(3), b"some state bytes").expect("write");
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read(&path).expect("read");

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        std::fs::write(&path, &flipped).expect("write");
        assert!(matches!(file.read(), Err(SnapshotFileError::Checksum)));

        std::fs::write(&path, &good[..good.len() - 3]).expect("write");
        assert!(matches!(file.read(), Err(SnapshotFileError::BadLength(_))));

        std::fs::write(&path, b"not a snapshot at all, just text").expect("write");
        assert!(matches!(file.read(), Err(SnapshotFileError::NotASnapshot)));
    }
}
