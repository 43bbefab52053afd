//! The versioned bincode encoding used on disk and between peers.
//!
//! Every encoded value starts with a one-byte format version, so a future change of
//! encoding can be recognised (and migrated) instead of misread.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The current format version marker. 2: keys carry a list of limits, and the state holds
/// tenants and limit ledgers; 3: usage counts model tokens and cost; 4: limits have a unit
/// (requests, tokens, money) and slice asks carry needs and credits (data written by an
/// older version is refused, not misread).
pub const FORMAT_VERSION: u8 = 4;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty input")]
    Empty,
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    #[error("malformed body: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

fn config() -> impl bincode::config::Config {
    // A limit keeps a hostile length prefix from allocating unbounded memory.
    bincode::config::standard().with_limit::<{ 256 * 1024 * 1024 }>()
}

fn large_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ u32::MAX as usize }>()
}

/// Encodes `value` with the version marker.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    encode_with_capacity(value, 64)
}

/// [`encode`] into a buffer that starts with room for `capacity` bytes. For a whole-state
/// snapshot (tens of megabytes) a good guess saves the buffer's doublings, each of which
/// faults in fresh pages and copies everything written so far.
pub fn encode_with_capacity<T: Serialize>(value: &T, capacity: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(capacity.max(1));
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decodes a value written by [`encode`], refusing unknown versions and trailing bytes.
/// Claimed lengths are capped at 256 MiB: use it for messages.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let body = versioned_body(bytes)?;
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    finish(value, read, body.len())
}

/// Like [`decode`], with lengths capped at 4 GiB: for whole-state snapshots, which are
/// already in memory when decoded and may legitimately exceed the message cap.
pub fn decode_large<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let body = versioned_body(bytes)?;
    let (value, read) = bincode::serde::decode_from_slice(body, large_config())?;
    finish(value, read, body.len())
}

fn versioned_body(bytes: &[u8]) -> Result<&[u8], WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    Ok(body)
}

fn finish<T>(value: T, read: usize, len: usize) -> Result<T, WireError> {
    if read != len {
        return Err(WireError::TrailingBytes(len - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_a_version_marker() {
        let bytes = encode(&("key_1", 42u64)).expect("encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (String, u64) = decode(&bytes).expect("decode");
        assert_eq!(back, ("key_1".to_owned(), 42));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode::<u64>(&[]), Err(WireError::Empty)));
        assert!(matches!(
            decode::<u64>(&[9, 1]),
            Err(WireError::UnknownVersion(9))
        ));
        assert!(decode::<String>(&[FORMAT_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(matches!(
            decode::<u8>(&[FORMAT_VERSION, 1, 2]),
            Err(WireError::TrailingBytes(1))
        ));
    }
}
