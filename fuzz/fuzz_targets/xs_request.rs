//! Fuzz target: XenStore requests. Thin wrapper around
//! `vchan_xenif::xenstore::fuzzing::requests`, which `cargo test` also runs over the corpus
//! in `fuzz/corpus/xs_request/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vchan_xenif::xenstore::fuzzing::requests(data);
});
