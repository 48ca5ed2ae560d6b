#![no_main]

// as in the broker binary: allocations sized by hostile wire lengths are reserved lazily
#[global_allocator]
static ALLOC: sluice_server::alloc::GuardedAlloc = sluice_server::alloc::GuardedAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_server::fuzzing::sasl(data));
