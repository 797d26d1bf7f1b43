//! Compiles `bluewire/v1/*.proto` with protox (pure Rust, no system protoc).
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "bluewire/v1/message.proto",
        "bluewire/v1/cluster.proto",
        "bluewire/v1/federation.proto",
        "bluewire/v1/client.proto",
        "bluewire/v1/admin.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("bluewire_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // An envelope's content and signature as `Bytes`: a received envelope's fields point
        // into the received buffer, and a batch signature shared by many envelopes (a
        // signature table, a restore) is one allocation, not one copy per envelope.
        .bytes(".bluewire.v1.Envelope.content")
        .bytes(".bluewire.v1.Envelope.signature")
        .bytes(".bluewire.v1.DeliverRequest.signatures")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;

    // The benchmark-only service, apart: its own output directory (so the `bluewire.v1`
    // code generated again from its imports never replaces the one above) and not in the
    // descriptor set the nodes serve for reflection.
    let bench = "bluewire/bench/v1/floor.proto";
    println!("cargo:rerun-if-changed={bench}");
    let bench_out = out.join("bench");
    std::fs::create_dir_all(&bench_out)?;
    tonic_prost_build::configure()
        .out_dir(&bench_out)
        // Its messages are `bluewire.v1`'s, as generated above.
        .extern_path(".bluewire.v1", "crate::v1")
        .build_server(true)
        .build_client(true)
        .compile_fds(protox::compile([bench], ["."])?)?;
    Ok(())
}
