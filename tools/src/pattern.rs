//! A deterministic byte stream that can be generated and checked at any offset, at memory
//! speed: byte `o` of stream `seed` is byte `o % 8` of a 64-bit mix of `(seed, o / 8)`.

/// One side of a patterned stream: generates (sender) or checks (receiver) from `offset` on.
#[derive(Debug, Clone)]
pub struct Pattern {
    seed: u64,
    offset: u64,
}

fn word(seed: u64, index: u64) -> u64 {
    // splitmix64 of the index, keyed by the seed.
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Pattern {
    /// The stream `seed`, from its start.
    pub fn new(seed: u64) -> Pattern {
        Pattern { seed, offset: 0 }
    }

    fn expected(&self, buf: &mut [u8]) {
        let mut o = self.offset;
        let mut i = 0;
        while i < buf.len() {
            let w = word(self.seed, o / 8).to_le_bytes();
            let start = (o % 8) as usize;
            let n = (8 - start).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&w[start..start + n]);
            i += n;
            o += n as u64;
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.expected(buf);
        self.offset += buf.len() as u64;
    }

    /// Checks that `buf` holds the next bytes; on a mismatch returns the absolute offset of
    /// the first wrong byte.
    pub fn check(&mut self, buf: &[u8], scratch: &mut Vec<u8>) -> Result<(), u64> {
        scratch.resize(buf.len(), 0);
        self.expected(scratch);
        if let Some(i) = buf.iter().zip(scratch.iter()).position(|(a, b)| a != b) {
            return Err(self.offset + i as u64);
        }
        self.offset += buf.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_does_not_matter() {
        let mut whole = vec![0; 1000];
        Pattern::new(7).fill(&mut whole);
        let mut p = Pattern::new(7);
        let mut scratch = Vec::new();
        let mut at = 0;
        for step in [1, 3, 8, 13, 100, 875] {
            p.check(&whole[at..at + step], &mut scratch).unwrap();
            at += step;
        }
        assert_eq!(at, 1000);
        let mut other = Pattern::new(8);
        assert_eq!(other.check(&whole[..16], &mut scratch), Err(0));
        let mut bad = whole.clone();
        bad[500] ^= 1;
        assert_eq!(Pattern::new(7).check(&bad, &mut scratch), Err(500));
    }
}
