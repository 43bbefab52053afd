//! Decoding the base58 body of a key into its fixed 36 bytes, on the data plane's hot path.
//!
//! The general-purpose decoder works byte by byte on arbitrary lengths; a key has one fixed
//! length, so this one accumulates five characters at a time into 32-bit limbs. It accepts
//! exactly the strings whose standard (Bitcoin-alphabet) decoding is 36 bytes long.

/// The Bitcoin base58 alphabet.
const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// Value of each ASCII byte in the alphabet, or 0xFF.
const VALUES: [u8; 128] = {
    let mut table = [0xFF; 128];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
/// Output length in bytes, and in 32-bit limbs.
pub const DECODED_LEN: usize = 36;
const LIMBS: usize = DECODED_LEN / 4;
/// Characters folded into the limbs per step: 58^5 < 2^32.
const CHUNK: usize = 5;

/// Writes `value` as exactly `DIGITS` base58 digits, zero-padded (`1` is zero). The
/// alphabet is in ASCII order, so fixed-width encodings sort like the numbers they encode.
/// `value` must be below 58^`DIGITS`; higher digits are dropped.
pub fn encode_fixed<const DIGITS: usize>(mut value: u128, out: &mut String) {
    let mut digits = [ALPHABET[0]; DIGITS];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(value % 58) as usize];
        value /= 58;
    }
    out.extend(digits.iter().map(|&b| char::from(b)));
}

/// Decodes `text`, or returns `None` if it is not the base58 form of exactly 36 bytes.
pub fn decode(text: &[u8]) -> Option<[u8; DECODED_LEN]> {
    let mut limbs = [0u32; LIMBS]; // big-endian: limbs[0] is the most significant
    for chunk in text.chunks(CHUNK) {
        let mut value: u64 = 0;
        let mut scale: u64 = 1;
        for &byte in chunk {
            let digit = *VALUES.get(usize::from(byte))?;
            if digit == 0xFF {
                return None;
            }
            value = value * 58 + u64::from(digit);
            scale *= 58;
        }
        let mut carry = value;
        for limb in limbs.iter_mut().rev() {
            let next = u64::from(*limb) * scale + carry;
            *limb = next as u32;
            carry = next >> 32;
        }
        if carry != 0 {
            return None; // more than 36 bytes
        }
    }
    let mut bytes = [0u8; DECODED_LEN];
    for (out, limb) in bytes.chunks_exact_mut(4).zip(limbs) {
        out.copy_from_slice(&limb.to_be_bytes());
    }
    // Each leading '1' stands for one leading zero byte, and the number itself has no
    // leading zero bytes beyond those: together they must make exactly 36 bytes.
    let leading_ones = text.iter().take_while(|&&b| b == b'1').count();
    let leading_zero_bytes = bytes.iter().take_while(|&&b| b == 0).count();
    (leading_ones == leading_zero_bytes).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What the general-purpose decoder makes of `text` for a 36-byte target.
    fn reference(text: &[u8]) -> Option<[u8; DECODED_LEN]> {
        let mut out = [0u8; DECODED_LEN];
        match bs58::decode(text).onto(&mut out[..]) {
            Ok(DECODED_LEN) => Some(out),
            _ => None,
        }
    }

    fn fixed(value: u128) -> String {
        let mut out = String::new();
        encode_fixed::<22>(value, &mut out);
        out
    }

    proptest! {
        #[test]
        fn a_fixed_width_encoding_is_the_standard_one_padded(value in any::<u128>()) {
            let text = fixed(value);
            prop_assert_eq!(text.len(), 22);
            // The standard encoding of the number's significant bytes, left-padded with
            // the zero digit.
            let bytes = value.to_be_bytes();
            let significant = &bytes[bytes.iter().take_while(|&&b| b == 0).count()..];
            let standard = bs58::encode(significant).into_string();
            prop_assert_eq!(text.trim_start_matches('1'), standard.trim_start_matches('1'));
        }

        #[test]
        fn fixed_width_encodings_sort_like_their_numbers(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(fixed(a).cmp(&fixed(b)), a.cmp(&b));
        }

        #[test]
        fn encoded_bytes_decode_back(raw in proptest::array::uniform32(any::<u8>()), tail in any::<[u8; 4]>()) {
            let mut bytes = [0u8; DECODED_LEN];
            bytes[..32].copy_from_slice(&raw);
            bytes[32..].copy_from_slice(&tail);
            let text = bs58::encode(bytes).into_string();
            prop_assert_eq!(decode(text.as_bytes()), Some(bytes));
        }

        #[test]
        fn any_string_decodes_as_the_reference_does(
            text in proptest::collection::vec(proptest::sample::select(ALPHABET.to_vec()), 0..60)
        ) {
            prop_assert_eq!(decode(&text), reference(&text));
        }

        #[test]
        fn leading_zero_bytes_round_trip(zeros in 0usize..36, fill in 1u8..=255) {
            let mut bytes = [fill; DECODED_LEN];
            bytes[..zeros].fill(0);
            let text = bs58::encode(bytes).into_string();
            prop_assert_eq!(decode(text.as_bytes()), Some(bytes));
            prop_assert_eq!(decode(text.as_bytes()), reference(text.as_bytes()));
        }
    }

    #[test]
    fn foreign_characters_are_refused() {
        for text in ["0", "O", "I", "l", "é", "+", " "] {
            assert_eq!(decode(text.as_bytes()), None, "{text:?}");
        }
        assert_eq!(decode(b""), reference(b""));
    }
}
