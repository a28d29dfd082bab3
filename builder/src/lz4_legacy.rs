//! LZ4's legacy frame format, the one LZ4 framing the kernel's initramfs unpacker reads
//! (`lib/decompress_unlz4.c`): a 4-byte magic, then blocks, each a little-endian 32-bit
//! compressed length followed by an LZ4 block that decompresses to at most 8 MiB. There is no
//! end mark and no checksum; the input ends after the last block.
//!
//! Why LZ4 at all (issue 13): under QEMU's TCG the guest kernel unpacked the 222 MB initramfs
//! from zstd in 1.9 s and from this format in 1.0 s (direct boot, one host thread), which moved
//! the engine's readiness by the same 0.9-1.4 s. The archive grows from 72 to 87-89 MB, which only
//! the UEFI path pays (its loader reads the file through the firmware).
//!
//! Blocks are compressed with LZ4 HC in parallel; the output depends only on the input and the
//! level, never on the number of threads, so images stay reproducible.

use rayon::prelude::*;
use std::io::{self, Write};

/// `0x184C2102`, little-endian on disk.
pub const MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// The kernel decompresses each block into a buffer of this size.
pub const BLOCK: usize = 8 << 20;
/// Blocks gathered before they are compressed together, one per thread at most.
const BATCH_BLOCKS: usize = 4;

/// Streams data out as a legacy LZ4 frame. Call [`Lz4LegacyWriter::finish`]: dropping the
/// writer loses the last block.
pub struct Lz4LegacyWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    level: i32,
}

impl<W: Write> Lz4LegacyWriter<W> {
    /// `level` is LZ4 HC's (3-12; higher is smaller and slower to write, decompression speed
    /// barely moves).
    pub fn new(mut inner: W, level: i32) -> io::Result<Self> {
        inner.write_all(&MAGIC)?;
        Ok(Lz4LegacyWriter {
            inner,
            pending: Vec::with_capacity(BLOCK * BATCH_BLOCKS),
            level,
        })
    }

    /// Compresses `pending` (whole blocks, and a short last one only when `last`).
    fn drain(&mut self, last: bool) -> io::Result<()> {
        let whole = if last {
            self.pending.len()
        } else {
            self.pending.len() / BLOCK * BLOCK
        };
        if whole == 0 {
            return Ok(());
        }
        let level = self.level;
        let blocks: Vec<Vec<u8>> = self.pending[..whole]
            .par_chunks(BLOCK)
            .map(|chunk| {
                lz4::block::compress(
                    chunk,
                    Some(lz4::block::CompressionMode::HIGHCOMPRESSION(level)),
                    false,
                )
            })
            .collect::<io::Result<_>>()?;
        for block in blocks {
            let len = u32::try_from(block.len()).map_err(io::Error::other)?;
            self.inner.write_all(&len.to_le_bytes())?;
            self.inner.write_all(&block)?;
        }
        self.pending.drain(..whole);
        Ok(())
    }

    /// Writes the last block and returns the inner writer (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.drain(true)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Lz4LegacyWriter<W> {
    /// A full batch is compressed before new bytes are taken, so an error never follows
    /// bytes that were accepted.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.len() == BLOCK * BATCH_BLOCKS {
            self.drain(false)?;
        }
        let room = BLOCK * BATCH_BLOCKS - self.pending.len();
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Passes a flush on without closing a block early: block boundaries stay where the data
    /// puts them, so the output does not depend on how the caller buffers.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decompresses a whole legacy frame. Like the kernel, a repeated magic between blocks starts
/// a new frame and is skipped, and zero bytes after the last block (padding an image to a
/// sector or a word) end it.
pub fn decompress(raw: &[u8]) -> io::Result<Vec<u8>> {
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let mut rest = raw
        .strip_prefix(&MAGIC)
        .ok_or_else(|| bad("not an LZ4 legacy frame (magic 02214c18)".into()))?;
    let largest = lz4::block::compress_bound(BLOCK)?;
    let mut out = Vec::with_capacity(raw.len().saturating_mul(3));
    while !rest.is_empty() {
        let offset = raw.len() - rest.len();
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let header: [u8; 4] = rest
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| bad(format!("truncated block header at byte {offset}")))?;
        rest = &rest[4..];
        if header == MAGIC {
            continue;
        }
        let len = u32::from_le_bytes(header) as usize;
        if len > largest {
            return Err(bad(format!(
                "block at byte {offset} claims {len} bytes, more than an 8 MiB block can \
                 compress to ({largest})"
            )));
        }
        let block = rest.get(..len).ok_or_else(|| {
            bad(format!(
                "block at byte {offset} claims {len} bytes, {} remain",
                rest.len()
            ))
        })?;
        let data = lz4::block::decompress(block, Some(BLOCK as i32))
            .map_err(|e| bad(format!("block at byte {offset}: {e}")))?;
        out.extend_from_slice(&data);
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::compressible_text as sample;

    fn encode(data: &[u8], write_size: usize) -> Vec<u8> {
        let mut w = Lz4LegacyWriter::new(Vec::new(), 9).unwrap();
        for piece in data.chunks(write_size.max(1)) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    /// The layout the kernel expects: magic, then blocks of exactly 8 MiB but the last.
    fn block_sizes(frame: &[u8]) -> Vec<usize> {
        assert_eq!(frame[..4], MAGIC);
        let mut rest = &frame[4..];
        let mut sizes = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let block = &rest[4..4 + len];
            sizes.push(
                lz4::block::decompress(block, Some(BLOCK as i32))
                    .unwrap()
                    .len(),
            );
            rest = &rest[4 + len..];
        }
        sizes
    }

    #[test]
    fn round_trips_and_cuts_blocks_at_8_mib() {
        let data = sample(BLOCK * 5 + 12345);
        let frame = encode(&data, 1 << 20);
        assert!(
            frame.len() < data.len() / 3,
            "{} of {}",
            frame.len(),
            data.len()
        );
        assert_eq!(decompress(&frame).unwrap(), data);
        assert_eq!(
            block_sizes(&frame),
            [BLOCK, BLOCK, BLOCK, BLOCK, BLOCK, 12345]
        );
    }

    #[test]
    fn output_does_not_depend_on_how_the_caller_writes() {
        let data = sample(BLOCK * 2 + 77);
        let whole = encode(&data, data.len());
        assert_eq!(encode(&data, 4096), whole);
        assert_eq!(encode(&data, BLOCK + 1), whole);
        let mut flushed = Lz4LegacyWriter::new(Vec::new(), 9).unwrap();
        for piece in data.chunks(3 << 20) {
            flushed.write_all(piece).unwrap();
            flushed.flush().unwrap();
        }
        assert_eq!(flushed.finish().unwrap(), whole);
    }

    #[test]
    fn empty_input_is_the_magic_alone() {
        let frame = encode(&[], 1);
        assert_eq!(frame, MAGIC);
        assert!(decompress(&frame).unwrap().is_empty());
    }

    #[test]
    fn damage_is_reported_with_its_offset() {
        let data = sample(100_000);
        let frame = encode(&data, data.len());
        let e = decompress(&frame[..frame.len() - 10]).unwrap_err();
        assert!(e.to_string().contains("block at byte 4 claims"), "{e}");
        let e = decompress(&frame[..6]).unwrap_err();
        assert!(
            e.to_string().contains("truncated block header at byte 4"),
            "{e}"
        );
        let e = decompress(b"\x04\x22\x4d\x18rest").unwrap_err();
        assert!(e.to_string().contains("legacy frame"), "{e}");
    }

    #[test]
    fn oversized_corrupt_and_padded_frames() {
        // A block that decompresses to more than the kernel's 8 MiB buffer is refused.
        let big = vec![7u8; BLOCK + 1];
        let block = lz4::block::compress(&big, None, false).unwrap();
        let mut frame = MAGIC.to_vec();
        frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
        frame.extend_from_slice(&block);
        let e = decompress(&frame).unwrap_err();
        assert!(e.to_string().contains("block at byte 4:"), "{e}");
        // A length no 8 MiB block can have.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = decompress(&huge).unwrap_err();
        assert!(e.to_string().contains("more than an 8 MiB block"), "{e}");
        // A damaged payload: an error or other bytes, never a panic or the original.
        let data = sample(200_000);
        let good = encode(&data, data.len());
        let mut damaged = good.clone();
        for b in &mut damaged[8..40] {
            *b = 0xff;
        }
        assert!(decompress(&damaged).map_or(true, |d| d != data));
        // Zero padding after the last block ends the frame, as in the kernel.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decompress(&padded).unwrap(), data);
        padded.extend_from_slice(&[0; 509]);
        assert_eq!(decompress(&padded).unwrap(), data);
    }

    #[test]
    fn output_does_not_depend_on_the_number_of_threads() {
        let data = sample(BLOCK * 5 + 3);
        let many = encode(&data, 1 << 20);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| encode(&data, 1 << 20));
        assert_eq!(one, many);
    }

    #[test]
    fn a_repeated_magic_between_blocks_is_skipped_as_the_kernel_does() {
        let a = encode(b"first part ", 100);
        let b = encode(b"second part", 100);
        let mut joined = a.clone();
        joined.extend_from_slice(&b);
        assert_eq!(decompress(&joined).unwrap(), b"first part second part");
    }
}
