//! Connecting to a node as a member or operator: loads a user certificate
//! and opens a mutual-TLS gRPC channel (used by the `bluewire` CLI, tests
//! and benchmarks). Holds no state beyond the channel.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluewire_proto::v1::admin_client::AdminClient;
use bluewire_proto::v1::client_client::ClientClient;
use bluewire_proto::v1::federation_client::FederationClient;
use tonic::transport::Channel;

use crate::tls::{LinkInfo, TlsError, TlsIdentity};

/// A channel to one node plus what its handshake negotiated.
#[derive(Clone)]
pub struct Connection {
    pub channel: Channel,
    pub link: Arc<Mutex<LinkInfo>>,
    pub endpoint: String,
}

/// Largest message the client side encodes or decodes.
pub const CLIENT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl Connection {
    /// Open a (lazy) channel to `endpoint` with the certificate and key in
    /// PEM files, trusting the federation root in `ca`.
    pub fn open(endpoint: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Self, String> {
        Self::open_with_provider(endpoint, ca, cert, key, crate::tls::provider())
    }

    /// As [`Self::open`], with the TLS handshake limited to what `provider` offers (e.g. one
    /// key-exchange group).
    pub fn open_with_provider(
        endpoint: &str,
        ca: &Path,
        cert: &Path,
        key: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, String> {
        crate::tls::install_default_provider();
        let id = TlsIdentity::load(ca, cert, key, None).map_err(|e: TlsError| e.to_string())?;
        let cfg = id.client_config_with(provider).map_err(|e| e.to_string())?;
        let link = Arc::new(Mutex::new(LinkInfo::default()));
        let channel = crate::tls::channel(
            endpoint,
            cfg,
            id.root_der.clone(),
            None,
            link.clone(),
            Duration::from_secs(5),
            Duration::from_secs(10),
        )?;
        Ok(Self {
            channel,
            link,
            endpoint: endpoint.to_string(),
        })
    }

    pub fn client(&self) -> ClientClient<Channel> {
        ClientClient::new(self.channel.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE)
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    pub fn federation(&self) -> FederationClient<Channel> {
        FederationClient::new(self.channel.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE)
    }

    /// Key-exchange group of the current connection ("" before connecting).
    pub fn kx_group(&self) -> String {
        self.link
            .lock()
            .map(|l| l.kx_group.clone())
            .unwrap_or_default()
    }
}

/// Trailer of a subscription the node ended because the subscriber was too slow
/// (`RESOURCE_EXHAUSTED`): the seq to resume after (`SubscribeRequest.after_seq`), the last
/// item the node sent on that stream.
pub const RESUME_AFTER_SEQ: &str = "bluewire-resume-after-seq";

/// The seq a subscription that ended with `s` resumes after without a gap, when the node
/// stated one (a slow subscriber's disconnection).
pub fn resume_after(s: &tonic::Status) -> Option<u64> {
    s.metadata()
        .get(RESUME_AFTER_SEQ)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Turn a gRPC error into advice for a person at a terminal.
pub fn explain_status(endpoint: &str, s: &tonic::Status) -> String {
    use tonic::Code;
    let msg = s.message();
    let lower = msg.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    // The node named a certificate problem (a TLS alert, or our check of its certificate).
    let certificate = has(&[
        "certificate",
        "alert",
        "unknownca",
        "unknown ca",
        "revoked",
        "not valid for name",
    ]);
    // The connection ended without a reason: the node stopped (or restarted) mid-handshake,
    // or closed it after the handshake (its log says why).
    let closed = has(&[
        "eof",
        "reset",
        "broken pipe",
        "peer closed",
        "connection closed",
    ]);
    match s.code() {
        Code::Unavailable | Code::Unknown if certificate => format!(
            "TLS with {endpoint} failed ({msg}): check --ca is the federation root and --cert/--key are your (unrevoked) user certificate"
        ),
        Code::Unavailable | Code::Unknown if closed => format!(
            "the node at {endpoint} closed the connection without a reason ({msg}): it may have stopped or be restarting — check it is running; if it is, its log says why it dropped the connection"
        ),
        Code::Unavailable | Code::Unknown if has(&["tls", "handshake"]) => format!(
            "TLS with {endpoint} failed ({msg}): check the endpoint is a Bluewire node, --ca is the federation root and --cert/--key are your user certificate"
        ),
        Code::Unavailable => format!(
            "cannot reach the node at {endpoint} ({msg}): is it running, and is the endpoint right?"
        ),
        Code::PermissionDenied => format!("refused by the node: {msg}"),
        Code::InvalidArgument => format!("the node rejected the request: {msg}"),
        // The node's message already says what is wrong and what to do.
        Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists => msg.to_string(),
        _ => format!("{}: {msg}", s.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::explain_status;
    use tonic::{Code, Status};

    fn explain(code: Code, msg: &str) -> String {
        explain_status("https://n:7443", &Status::new(code, msg))
    }

    #[test]
    fn a_node_dying_mid_handshake_is_not_blamed_on_certificates() {
        let m = explain(Code::Unavailable, "tls handshake eof");
        assert!(m.contains("closed the connection"), "{m}");
        assert!(!m.contains("--ca"), "{m}");
        let m = explain(Code::Unknown, "connection reset by peer (os error 104)");
        assert!(m.contains("may have stopped"), "{m}");
    }

    #[test]
    fn certificate_problems_point_at_the_certificate_flags() {
        for msg in [
            "received fatal alert: UnknownCA",
            "invalid peer certificate: Revoked",
            "received fatal alert: CertificateRevoked during handshake eof",
        ] {
            let m = explain(Code::Unavailable, msg);
            assert!(
                m.contains("check --ca is the federation root"),
                "{msg}: {m}"
            );
        }
        let m = explain(Code::Unavailable, "tls: bad record");
        assert!(m.contains("is a Bluewire node"), "{m}");
    }

    #[test]
    fn other_codes_keep_their_advice() {
        assert!(explain(Code::Unavailable, "connection refused").contains("is it running"));
        assert_eq!(
            explain(Code::PermissionDenied, "no"),
            "refused by the node: no"
        );
        assert_eq!(
            explain(Code::InvalidArgument, "bad"),
            "the node rejected the request: bad"
        );
        assert_eq!(explain(Code::NotFound, "gone"), "gone");
        assert!(explain(Code::Internal, "x").ends_with(": x"));
    }
}
