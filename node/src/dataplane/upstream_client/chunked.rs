//! Decoding a chunked body (RFC 9112 §7.1) as it arrives: each piece of a chunk is passed on
//! as soon as it is read, so a streamed answer (server-sent events) is never held back
//! waiting for the rest of its chunk.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (with extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Most trailer bytes accepted; trailers are read and dropped.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

/// The body is not valid chunked coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("a chunk size is not a hexadecimal number")]
    BadSize,
    #[error("a chunk does not end with a line break")]
    BadChunkEnd,
    #[error("a chunk-size line or the trailers are too long")]
    TooLong,
}

/// A chunked-body decoder fed from a connection's read buffer.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
}

impl ChunkedDecoder {
    /// Consumes what it can from `buf`: the next piece of data, or the end of the body.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(end) = line_end(buf) else {
                        return if buf.len() > MAX_SIZE_LINE {
                            Err(ChunkedError::TooLong)
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    let size = parse_size(&buf[..end.content])?;
                    buf.advance(end.next);
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => match buf.first() {
                    None => return Ok(Decoded::NeedMore),
                    Some(b'\n') => {
                        buf.advance(1);
                        self.state = State::Size;
                    }
                    Some(b'\r') => match buf.get(1) {
                        None => return Ok(Decoded::NeedMore),
                        Some(b'\n') => {
                            buf.advance(2);
                            self.state = State::Size;
                        }
                        Some(_) => return Err(ChunkedError::BadChunkEnd),
                    },
                    Some(_) => return Err(ChunkedError::BadChunkEnd),
                },
                State::Trailers(seen) => {
                    let Some(end) = line_end(buf) else {
                        return if seen + buf.len() > MAX_TRAILER_BYTES {
                            Err(ChunkedError::TooLong)
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    buf.advance(end.next);
                    self.state = if end.content == 0 {
                        State::Done
                    } else if seen + end.next > MAX_TRAILER_BYTES {
                        return Err(ChunkedError::TooLong);
                    } else {
                        State::Trailers(seen + end.next)
                    };
                }
                State::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// A line's extent in a buffer: its content, and where the next line starts.
struct LineEnd {
    content: usize,
    next: usize,
}

/// Finds the end of the first line; a bare LF is accepted as a line break, as RFC 9112 §2.2
/// allows a recipient to.
fn line_end(buf: &[u8]) -> Option<LineEnd> {
    let newline = buf.iter().position(|&b| b == b'\n')?;
    let content = if newline > 0 && buf[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    };
    Some(LineEnd {
        content,
        next: newline + 1,
    })
}

/// Parses a chunk-size line: hexadecimal digits, then optional whitespace and extensions.
fn parse_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    let rest = rest.trim_ascii_start();
    if digits.is_empty() || digits.len() > 16 || !(rest.is_empty() || rest[0] == b';') {
        return Err(ChunkedError::BadSize);
    }
    digits.iter().try_fold(0u64, |size, &digit| {
        let value = (digit as char).to_digit(16).ok_or(ChunkedError::BadSize)?;
        Ok(size << 4 | u64::from(value))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Feeds `input` to a decoder in pieces of `step` bytes and collects the data.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, BytesMut), ChunkedError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Done => return Ok((body, buf)),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err(ChunkedError::TooLong);
                    }
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunks_with_extensions_and_trailers_decode_to_their_data() {
        let input = b"5;name=value\r\nhello\r\n7 \r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, input.len()] {
            let (body, rest) = decode_in_steps(input, step).expect("valid");
            assert_eq!(body, b"hello, world", "step {step}");
            // Bytes after the body belong to the next response and stay in the buffer.
            if step == input.len() {
                assert_eq!(&rest[..], b"NEXT");
            }
        }
    }

    #[test]
    fn bare_line_feeds_are_accepted() {
        let (body, _) = decode_in_steps(b"3\nabc\n0\n\n", 1).expect("valid");
        assert_eq!(body, b"abc");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert_eq!(decode_in_steps(b"zz\r\n", 4), Err(ChunkedError::BadSize));
        assert_eq!(decode_in_steps(b"\r\n", 4), Err(ChunkedError::BadSize));
        assert_eq!(decode_in_steps(b"3x\r\nabc", 8), Err(ChunkedError::BadSize));
        assert_eq!(
            decode_in_steps(b"11111111111111111\r\n", 32),
            Err(ChunkedError::BadSize)
        );
        assert_eq!(
            decode_in_steps(b"3\r\nabcX\r\n", 16),
            Err(ChunkedError::BadChunkEnd)
        );
        let long_line = vec![b'1'; MAX_SIZE_LINE + 2];
        assert_eq!(decode_in_steps(&long_line, 1024), Err(ChunkedError::TooLong));
    }

    #[test]
    fn a_piece_of_a_chunk_is_passed_on_before_the_rest_arrives() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"a\r\nhello"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"hello")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::NeedMore));
        buf.extend_from_slice(b"world\r\n0\r\n\r\n");
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"world")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Done));
    }

    proptest! {
        #[test]
        fn any_body_encoded_in_any_chunks_decodes_whole(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(1usize..97, 1..8),
            step in 1usize..64,
        ) {
            let mut encoded = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < body.len() {
                let end = (at + cut.next().copied().unwrap_or(1)).min(body.len());
                encoded.extend_from_slice(format!("{:X}\r\n", end - at).as_bytes());
                encoded.extend_from_slice(&body[at..end]);
                encoded.extend_from_slice(b"\r\n");
                at = end;
            }
            encoded.extend_from_slice(b"0\r\n\r\n");
            let (decoded, rest) = decode_in_steps(&encoded, step).expect("valid");
            prop_assert_eq!(decoded, body);
            prop_assert!(rest.is_empty());
        }
    }
}
