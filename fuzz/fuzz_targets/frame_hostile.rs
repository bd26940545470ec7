//! Fuzz target `frame_hostile`: a thin wrapper around `vchan_msg::frame::fuzzing::hostile`; its corpus
//! (`fuzz/corpus/frame_hostile/`) is replayed by `cargo test -p vchan-msg`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vchan_msg::frame::fuzzing::hostile(data);
});
