//! Replays the committed fuzz corpora (`fuzz/corpus/xs_request`, `fuzz/corpus/xs_reply`)
//! through the same functions the fuzz targets call, plus random inputs (proptest).

use std::path::Path;

use proptest::prelude::*;
use vchan_xenif::xenstore::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        n += 1;
    }
    assert!(n >= 8, "only {n} seeds in {}", dir.display());
}

#[test]
fn xs_request_corpus() {
    replay("xs_request", fuzzing::requests);
}

#[test]
fn xs_reply_corpus() {
    replay("xs_reply", fuzzing::replies);
}

/// A well-formed header followed by arbitrary payload bytes, so that random inputs get past
/// the framing and into the parsers.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (
            0u32..24,
            any::<u32>(),
            0u32..3,
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        1..8,
    )
    .prop_map(|msgs| {
        let mut out = Vec::new();
        for (t, req, tx, payload) in msgs {
            for w in [t, req, tx, payload.len() as u32] {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            out.extend_from_slice(&payload);
        }
        out
    })
}

proptest! {
    #[test]
    fn random_requests_never_panic(data in framed()) {
        fuzzing::requests(&data);
    }

    #[test]
    fn random_replies_never_panic(data in framed()) {
        fuzzing::replies(&data);
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::requests(&data);
        fuzzing::replies(&data);
    }
}
