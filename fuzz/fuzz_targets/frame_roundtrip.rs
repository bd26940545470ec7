//! Fuzz target `frame_roundtrip`: a thin wrapper around `vchan_msg::frame::fuzzing::roundtrip`; its corpus
//! (`fuzz/corpus/frame_roundtrip/`) is replayed by `cargo test -p vchan-msg`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vchan_msg::frame::fuzzing::roundtrip(data);
});
