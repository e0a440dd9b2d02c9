//! Base64 without padding, URL-safe alphabet (cookie values) and standard
//! alphabet (secrets in the config, padding optional).

const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encode `bytes` as unpadded base64url.
pub fn encode_url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn value(c: u8, url: bool) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' if url => 62,
        b'_' if url => 63,
        b'+' if !url => 62,
        b'/' if !url => 63,
        _ => return None,
    } as u32)
}

fn decode(s: &[u8], url: bool) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c, url)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        let take = chunk.len() - 1;
        // Reject non-canonical encodings (stray low bits), so one byte
        // string has exactly one cookie text.
        let used_bits = 8 * take;
        let all_bits = 6 * chunk.len();
        if (n >> (24 - all_bits)) & ((1 << (all_bits - used_bits)) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[1..1 + take]);
    }
    Some(out)
}

/// Decode unpadded base64url; `None` on any invalid or non-canonical input.
pub fn decode_url(s: &str) -> Option<Vec<u8>> {
    decode(s.as_bytes(), true)
}

/// Decode standard base64, with or without `=` padding.
pub fn decode_std(s: &str) -> Option<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    if s.len() - trimmed.len() > 2 {
        return None;
    }
    decode(trimmed.as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_url(raw.as_bytes()), enc);
            assert_eq!(decode_url(enc).as_deref(), Some(raw.as_bytes()));
        }
        assert_eq!(decode_std("Zm9vYg==").as_deref(), Some(&b"foob"[..]));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode_url("Z"), None);
        assert_eq!(decode_url("Zm9v!"), None);
        assert_eq!(decode_url("Zh"), None); // non-canonical trailing bits
        assert_eq!(decode_url("+/"), None);
        assert_eq!(decode_std("Zg==="), None);
    }

    #[test]
    fn roundtrip_all_lengths() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..data.len() {
            assert_eq!(
                decode_url(&encode_url(&data[..n])).as_deref(),
                Some(&data[..n])
            );
        }
    }
}
