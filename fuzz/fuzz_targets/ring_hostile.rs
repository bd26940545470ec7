//! Fuzz target `ring_hostile`: a thin wrapper around `vchan_ring::fuzzing::hostile`; its corpus
//! (`fuzz/corpus/ring_hostile/`) is replayed by `cargo test -p vchan-ring`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vchan_ring::fuzzing::hostile(data);
});
