//! Fuzz target `ring_diff`: a thin wrapper around `vchan_ring::fuzzing::differential`; its corpus
//! (`fuzz/corpus/ring_diff/`) is replayed by `cargo test -p vchan-ring`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vchan_ring::fuzzing::differential(data);
});
