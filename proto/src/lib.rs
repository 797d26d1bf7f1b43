//! The Bluewire gRPC contract, package `bluewire.v1`: envelopes and content
//! (`message.proto`), node-to-node federation, the member-facing client
//! service and the operator admin service. Generated code only; no logic.
#![forbid(unsafe_code)]
#![allow(clippy::large_enum_variant, clippy::doc_overindented_list_items)]

pub mod v1 {
    tonic::include_proto!("bluewire.v1");

    /// Encoded `FileDescriptorSet` for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/bluewire_descriptor.bin"));
}

/// Package `bluewire.bench.v1`: the transport floor `bluewire bench floor` measures (the
/// fan-out's calls and messages with nothing behind them). For benchmarks only; no node
/// serves it.
pub mod bench {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bench/bluewire.bench.v1.rs"));
    }
}
