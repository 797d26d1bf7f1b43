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
