//! Arbitrary bytes as the request side of an ADS stream: gRPC frames, each message
//! decoded as a State-of-the-World and as a Delta request. Finds panics, unbounded
//! allocation, and disagreements with prost (see `isthmus_xds::server::fuzz_requests`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = isthmus_xds::server::fuzz_requests(data);
});
