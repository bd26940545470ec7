//! Fuzz target: XenStore replies. Thin wrapper around
//! `vchan_xenif::xenstore::fuzzing::replies`, which `cargo test` also runs over the corpus
//! in `fuzz/corpus/xs_reply/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vchan_xenif::xenstore::fuzzing::replies(data);
});
