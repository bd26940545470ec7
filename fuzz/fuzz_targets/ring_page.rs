//! Fuzz target `ring_page`: a thin wrapper around `vchan_ring::fuzzing::page`; its corpus
//! (`fuzz/corpus/ring_page/`) is replayed by `cargo test -p vchan-ring`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vchan_ring::fuzzing::page(data);
});
