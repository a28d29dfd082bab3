//! GUIDs for disk structures (GPT, VHDX), derived from the build's lock instead of drawn at
//! random, so two builds from one lock write the same bytes (SPEC V1).
//!
//! A derived GUID is an RFC 9562 version 8 ("custom") UUID: the first 16 bytes of
//! SHA-256("eci-build guid" NUL purpose NUL lock-sha256) with the version and variant bits set.
//! The purpose string keeps the GUIDs of one build distinct (disk, partition, VHDX ids...).

use sha2::{Digest, Sha256};
use std::fmt;

/// A GUID in the byte order it is printed in (RFC 9562 order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid([u8; 16]);

impl Guid {
    pub const NIL: Guid = Guid([0; 16]);

    /// A GUID from the fields of its printed form `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_be_bytes();
        let b = d2.to_be_bytes();
        let c = d3.to_be_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// Parses `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (either case, optional braces).
    pub fn parse(text: &str) -> Option<Guid> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(t);
        let groups: Vec<&str> = t.split('-').collect();
        if groups.len() != 5
            || groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12]
        {
            return None;
        }
        let hex: String = groups.concat();
        let bytes = hex::decode(hex).ok()?;
        let mut out = [0u8; 16];
        out.copy_from_slice(&bytes);
        Some(Guid(out))
    }

    /// The GUID for `purpose` in the build pinned by `lock_sha256`.
    pub fn derive(lock_sha256: &str, purpose: &str) -> Guid {
        let digest = derive_bytes(lock_sha256, "guid", purpose);
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x80; // version 8
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
        Guid(b)
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// The layout GPT and VHDX store on disk: the first three fields little-endian.
    pub fn to_le_bytes(&self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    pub fn from_le_bytes(b: [u8; 16]) -> Guid {
        // The swap is its own inverse.
        Guid(Guid(b).to_le_bytes())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode_upper(self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// A 32-bit identifier for `purpose` (FAT volume serial numbers), derived like [`Guid::derive`].
pub fn derive_u32(lock_sha256: &str, purpose: &str) -> u32 {
    let d = derive_bytes(lock_sha256, "u32", purpose);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

fn derive_bytes(lock_sha256: &str, kind: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"eci-build ");
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(lock_sha256.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_guid_prints_and_stores_in_mixed_endian() {
        // The EFI System Partition type as the UEFI specification prints and stores it.
        let esp = Guid::from_fields(
            0xC12A_7328,
            0xF81F,
            0x11D2,
            [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
        );
        assert_eq!(esp.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(
            esp.to_le_bytes(),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        assert_eq!(Guid::from_le_bytes(esp.to_le_bytes()), esp);
        assert_eq!(
            Guid::parse("{c12a7328-f81f-11d2-ba4b-00a0c93ec93b}"),
            Some(esp)
        );
        assert_eq!(Guid::parse("c12a7328-f81f-11d2-ba4b"), None);
    }

    #[test]
    fn derived_guids_are_stable_distinct_and_version_8() {
        let lock = "ab".repeat(32);
        let a = Guid::derive(&lock, "disk");
        assert_eq!(a, Guid::derive(&lock, "disk"));
        assert_ne!(a, Guid::derive(&lock, "partition"));
        assert_ne!(a, Guid::derive(&"cd".repeat(32), "disk"));
        let s = a.to_string();
        assert_eq!(&s[14..15], "8", "{s}");
        assert!(matches!(&s[19..20], "8" | "9" | "A" | "B"), "{s}");
        assert_ne!(derive_u32(&lock, "a"), derive_u32(&lock, "b"));
    }
}
