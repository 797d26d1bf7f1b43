//! Transport security as an operator would check it: only this federation's
//! certificates get in, there is no plaintext port, revocation bites without
//! a restart, links negotiate the post-quantum hybrid group, and roles are
//! enforced.

use std::time::Duration;

use bluewire_node::client::Connection;
use bluewire_node::envelope::seal;
use bluewire_node::pki::{self, FederationCa, OrgProfile, OrgRequest, UserRole};
use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, content, pb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PQ_GROUP: &str = "X25519MLKEM768";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_negotiate_x25519mlkem768() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
        OrgSpec::new("cert-eu", "EU", "eu-body", &[pki::Level::Technical]),
    ])
    .await;

    // A member's connection.
    let conn = fed.client("csirt-be", "analyst");
    assert_eq!(
        conn.kx_group(),
        "",
        "nothing negotiated before the first call"
    );
    let hello = conn
        .federation()
        .hello(pb::HelloRequest {})
        .await
        .expect("Hello as a user")
        .into_inner();
    assert_eq!(conn.kx_group(), PQ_GROUP);
    assert_eq!(hello.kx_group, PQ_GROUP);

    // A node's connection, as the server saw it.
    let hello = fed
        .node_conn("csirt-fr", "csirt-be")
        .federation()
        .hello(pb::HelloRequest {})
        .await
        .expect("Hello as a node")
        .into_inner();
    assert_eq!(hello.org, "csirt-be");
    assert_eq!(hello.caller_org, "csirt-fr");
    assert_eq!(hello.kx_group, PQ_GROUP);

    // The delivery links of the node.
    fed.publish("csirt-be", "kx check").await;
    assert_eventually!(
        {
            let p = fed.peers("csirt-be").await;
            p.len() == 2
                && p.iter()
                    .all(|p| p.kx_group == PQ_GROUP && p.outbox_depth == 0)
        },
        "Admin.Peers at csirt-be: {:?}",
        fed.peers("csirt-be").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_from_another_federation_is_refused() {
    let fed = TestFederation::new(&[OrgSpec::csirt("csirt-be", "BE")]).await;
    let info = fed.info("csirt-be");

    // Another federation issues an organisation with the same id.
    let other = FederationCa::generate("Rogue federation").unwrap();
    let bundle = other
        .issue_org(&OrgRequest {
            profile: OrgProfile {
                org: "csirt-be".into(),
                country: "BE".into(),
                org_type: "csirt".into(),
                levels: vec![pki::Level::Technical],
                sectors: vec![],
                accreditations: vec![],
                endpoint: info.endpoint.clone(),
                signing_keys: vec![],
                encryption_keys: vec![],
                functions: Vec::new(),
            },
            validity_days: 5,
        })
        .unwrap();
    let dir = fed.dir.path().join("rogue");
    bundle.save(&dir).unwrap();
    pki::issue_user(
        &bundle.org_ca_cert_pem,
        &bundle.org_ca_key_pem,
        "operator",
        UserRole::Operator,
        5,
    )
    .unwrap()
    .save(&dir.join("user"), &bundle.ca_cert_pem)
    .unwrap();

    // Trusting the real root (so the server is accepted) but presenting a
    // foreign client certificate: the node refuses the handshake.
    let real_ca = info.dir.join("ca.crt");
    for (cert, key) in [
        (dir.join("user/user.crt"), dir.join("user/user.key")),
        (dir.join("node.crt"), dir.join("node.key")),
    ] {
        let conn = Connection::open(&info.endpoint, &real_ca, &cert, &key).unwrap();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            conn.federation().hello(pb::HelloRequest {}),
        )
        .await
        .expect("refusal must be prompt");
        assert!(
            r.is_err(),
            "foreign certificate {} was accepted",
            cert.display()
        );
        let r = conn.admin().status(pb::StatusRequest {}).await;
        assert!(
            r.is_err(),
            "foreign certificate {} was accepted",
            cert.display()
        );
    }

    // The node still serves its own operator.
    fed.client("csirt-be", "operator")
        .admin()
        .status(pb::StatusRequest {})
        .await
        .expect("own operator still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn there_is_no_plaintext_port() {
    let fed = TestFederation::new(&[OrgSpec::csirt("csirt-be", "BE")]).await;
    let port = fed.info("csirt-be").port;

    // h2c gRPC.
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        pb::federation_client::FederationClient::new(ch)
            .hello(pb::HelloRequest {})
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .expect("plaintext attempt must fail promptly");
    assert!(r.is_err(), "plaintext h2c gRPC call succeeded: {r:?}");

    // HTTP/1.1 over plain TCP: whatever comes back is not HTTP.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("TCP connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write request");
    let mut buf = Vec::new();
    // A reset connection is as good as a closed one; only an HTTP answer fails.
    let _reset_or_eof = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
        .await
        .expect("the node must close a plaintext connection promptly");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "the node answered plaintext HTTP: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // And it still serves TLS clients.
    fed.client("csirt-be", "operator")
        .admin()
        .status(pb::StatusRequest {})
        .await
        .expect("TLS still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_and_organisations_are_enforced() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let denied = |r: Result<tonic::Status, ()>, what: &str| {
        let s = r.unwrap_or_else(|_| panic!("{what}: expected PermissionDenied, call succeeded"));
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{what}: {s}");
    };

    // A csirt-fr member cannot use csirt-be's client service.
    let foreign = fed.client_as("csirt-fr", "analyst", "csirt-be");
    denied(
        foreign
            .client()
            .publish(bluewire_tests::free_text("not yours"))
            .await
            .map(|_| ())
            .err()
            .ok_or(()),
        "csirt-fr user publishing at csirt-be",
    );
    let mut s = foreign
        .client()
        .subscribe(pb::SubscribeRequest::default())
        .await;
    if let Ok(stream) = &mut s {
        let first = stream.get_mut().message().await;
        assert!(first.is_err(), "csirt-fr user read csirt-be's feed");
    } else {
        denied(
            s.map(|_| ()).err().ok_or(()),
            "csirt-fr user subscribing at csirt-be",
        );
    }
    let foreign_op = fed.client_as("csirt-fr", "operator", "csirt-be");
    denied(
        foreign_op
            .admin()
            .status(pb::StatusRequest {})
            .await
            .map(|_| ())
            .err()
            .ok_or(()),
        "csirt-fr operator calling csirt-be Admin.Status",
    );

    // An analyst is not an operator.
    let analyst = fed.client("csirt-be", "analyst");
    denied(
        analyst
            .admin()
            .status(pb::StatusRequest {})
            .await
            .map(|_| ())
            .err()
            .ok_or(()),
        "analyst calling Admin.Status",
    );
    denied(
        analyst
            .admin()
            .rejections(pb::RejectionsRequest { limit: 10 })
            .await
            .map(|_| ())
            .err()
            .ok_or(()),
        "analyst calling Admin.Rejections",
    );
    let status = fed
        .client("csirt-be", "operator")
        .admin()
        .status(pb::StatusRequest {})
        .await
        .expect("operator may call Admin.Status")
        .into_inner();
    assert_eq!(status.org, "csirt-be");

    // A user certificate cannot act as a node, nor a node as a user.
    denied(
        analyst
            .federation()
            .deliver(pb::DeliverRequest::default())
            .await
            .map(|_| ())
            .err()
            .ok_or(()),
        "user calling Federation.Deliver",
    );
    denied(
        fed.node_conn("csirt-fr", "csirt-be")
            .client()
            .publish(bluewire_tests::free_text("node as user"))
            .await
            .map(|_| ())
            .err()
            .ok_or(()),
        "node certificate calling Client.Publish",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_org_is_cut_off_without_restart() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
        OrgSpec::new("cert-eu", "EU", "eu-body", &[pki::Level::Technical]),
    ])
    .await;

    // Before: everything works and links are established.
    let before = fed.publish("csirt-be", "before revocation").await;
    for org in ["csirt-fr", "cert-eu"] {
        let st = fed.node(org);
        assert_eventually!(
            st.store.find_by_id(&before.id).unwrap().len() == 1,
            "{org} never received the first message"
        );
    }
    let fr_node = fed.node_conn("csirt-fr", "csirt-be");
    let fr_user = fed.client_as("csirt-fr", "analyst", "csirt-be");
    fr_node
        .federation()
        .hello(pb::HelloRequest {})
        .await
        .expect("node hello before");
    fr_user
        .federation()
        .hello(pb::HelloRequest {})
        .await
        .expect("user hello before");

    // The federation CA revokes csirt-fr; nodes poll fed/crl.pem every second.
    let mut ca = FederationCa::load(&fed.fed_dir).unwrap();
    let serials = ca.serials_of_org("csirt-fr");
    assert_eq!(serials.len(), 2, "node and org-CA certificates");
    ca.revoke(&serials).unwrap();
    ca.save(&fed.fed_dir).unwrap();

    // Already-open connections and new ones are refused.
    assert_eventually!(
        fr_node
            .federation()
            .hello(pb::HelloRequest {})
            .await
            .is_err(),
        "csirt-fr's open node connection still served after revocation"
    );
    assert_eventually!(
        fr_user
            .federation()
            .hello(pb::HelloRequest {})
            .await
            .is_err(),
        "csirt-fr's open user connection still served after revocation"
    );
    for (what, conn) in [
        ("new node connection", fed.node_conn("csirt-fr", "csirt-be")),
        (
            "new user connection",
            fed.client_as("csirt-fr", "analyst", "csirt-be"),
        ),
    ] {
        let r = conn.federation().hello(pb::HelloRequest {}).await;
        assert!(r.is_err(), "csirt-fr {what} accepted after revocation");
    }
    // A message signed by csirt-fr is not accepted from csirt-fr's link.
    let fr_key = fed.signing_key("csirt-fr");
    let r = fed
        .node_conn("csirt-fr", "csirt-be")
        .federation()
        .deliver(pb::DeliverRequest {
            envelopes: vec![seal(&fr_key, &content("csirt-fr", "from a revoked org"))],
            ..Default::default()
        })
        .await;
    assert!(
        r.is_err(),
        "csirt-be accepted a delivery from revoked csirt-fr: {r:?}"
    );

    // Other links still work.
    let after = fed.publish("csirt-be", "after revocation").await;
    let eu = fed.node("cert-eu");
    assert_eventually!(
        eu.store.find_by_id(&after.id).unwrap().len() == 1,
        "cert-eu stopped receiving after csirt-fr's revocation"
    );
}

/// The origin stops delivering to a revoked peer even over the HTTP/2
/// connection it opened before the revocation was loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_stops_delivering_to_a_revoked_org() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
        OrgSpec::new("cert-eu", "EU", "eu-body", &[pki::Level::Technical]),
    ])
    .await;
    let before = fed.publish("csirt-be", "before revocation").await;
    let fr = fed.node("csirt-fr");
    assert_eventually!(
        fr.store.find_by_id(&before.id).unwrap().len() == 1,
        "csirt-fr never received the first message"
    );
    let mut ca = FederationCa::load(&fed.fed_dir).unwrap();
    let serials = ca.serials_of_org("csirt-fr");
    ca.revoke(&serials).unwrap();
    ca.save(&fed.fed_dir).unwrap();
    let fr_node = fed.node_conn("csirt-fr", "csirt-be");
    assert_eventually!(
        fr_node
            .federation()
            .hello(pb::HelloRequest {})
            .await
            .is_err(),
        "csirt-be never loaded the revocation list"
    );

    let after = fed.publish("csirt-be", "after revocation").await;
    let eu = fed.node("cert-eu");
    assert_eventually!(
        eu.store.find_by_id(&after.id).unwrap().len() == 1,
        "cert-eu stopped receiving after csirt-fr's revocation"
    );
    assert_eventually!(
        timeout = Duration::from_secs(10),
        fed.peers("csirt-be")
            .await
            .iter()
            .any(|p| p.org == "csirt-fr" && p.outbox_depth >= 1 && p.consecutive_failures >= 2),
        "csirt-be kept delivering to revoked csirt-fr (csirt-fr has it: {}); peers: {:?}",
        fed.node("csirt-fr")
            .store
            .get("csirt-be", &after.id)
            .unwrap()
            .is_some(),
        fed.peers("csirt-be").await
    );
    assert!(
        fed.node("csirt-fr")
            .store
            .get("csirt-be", &after.id)
            .unwrap()
            .is_none(),
        "revoked csirt-fr received a message published after its revocation"
    );
}

/// aws-lc-rs with classical X25519 as its only key-exchange group: a TLS stack without
/// ML-KEM (OpenSSL 3.0, older Go and Java).
fn classical_only() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    std::sync::Arc::new(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_links_refuse_classical_key_exchange_and_user_tools_keep_it() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let (be, fr) = (fed.info("csirt-be"), fed.info("csirt-fr"));

    // csirt-fr's node certificate on a stack without ML-KEM: the handshake completes (a
    // user's tool may need it) but the node is refused, and the refusal is counted.
    let classical_node = Connection::open_with_provider(
        &be.endpoint,
        &fr.dir.join("ca.crt"),
        &fr.dir.join("node.crt"),
        &fr.dir.join("node.key"),
        classical_only(),
    )
    .unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        classical_node.federation().hello(pb::HelloRequest {}),
    )
    .await
    .expect("refusal must be prompt");
    assert!(r.is_err(), "a classical-only node was served: {r:?}");
    let metrics = fed.node("csirt-be").render_metrics();
    assert!(
        metrics.contains(
            r#"bluewire_tls_handshakes_total{kx_group="X25519",listener="node",outcome="refused",peer="node"} 1"#
        ),
        "{metrics}"
    );

    // A member's tool on the same stack is served, and its group is recorded.
    let u = be.user_dir("analyst");
    let classical_user = Connection::open_with_provider(
        &be.endpoint,
        &u.join("ca.crt"),
        &u.join("user.crt"),
        &u.join("user.key"),
        classical_only(),
    )
    .unwrap();
    let hello = classical_user
        .federation()
        .hello(pb::HelloRequest {})
        .await
        .expect("a user tool without ML-KEM is served")
        .into_inner();
    assert_eq!(hello.kx_group, "X25519");
    assert!(
        fed.node("csirt-be").render_metrics().contains(
            r#"bluewire_tls_handshakes_total{kx_group="X25519",listener="node",outcome="accepted",peer="user"} 1"#
        )
    );

    // The other way: csirt-be's delivery link offers only X25519MLKEM768, so a node
    // (here csirt-fr's certificate) on a classical-only stack is never reached.
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(fr.dir.join("node.crt"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_file(fr.dir.join("node.key")).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(classical_only())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor
            .accept(tcp)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let node = fed.node("csirt-be");
    let mut client = node
        .dialer
        .client(
            &format!("https://{addr}"),
            "csirt-fr",
            Default::default(),
            Duration::from_secs(5),
        )
        .unwrap();
    let r = client.hello(pb::HelloRequest {}).await;
    assert!(r.is_err(), "a node link was made without ML-KEM: {r:?}");
    let server_side = tokio::time::timeout(Duration::from_secs(20), accepted)
        .await
        .expect("handshake finished")
        .unwrap();
    let err = server_side.expect_err("the classical-only server completed a handshake");
    assert!(
        err.to_ascii_lowercase().contains("kx") || err.contains("group"),
        "refused for another reason: {err}"
    );
}
