#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bluewire_node::fuzzing::offline_bundle(data));
