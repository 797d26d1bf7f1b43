//! The node's counters as Prometheus scrapes them.

use bluewire_tests::{OrgSpec, TestFederation, assert_eventually};

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";

/// The Prometheus endpoint serves the per-rule counters over plain HTTP on
/// loopback, and a non-loopback metrics address is refused by the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_endpoint_serves_routing_counters_on_loopback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fed = TestFederation::new(&[OrgSpec::csirt(BE, "BE"), OrgSpec::csirt(FR, "FR")]).await;
    let info = fed.info(BE).clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = std::fs::read_to_string(&info.config_path).unwrap();
    assert!(toml.contains("# listen = \"127.0.0.1:9464\""), "{toml}");
    let bad = toml.replacen(
        "# listen = \"127.0.0.1:9464\"",
        "listen = \"0.0.0.0:9464\"",
        1,
    );
    let e = bluewire_node::config::NodeConfig::parse(&bad, &info.dir, &info.config_path)
        .expect_err("a non-loopback metrics address is refused");
    assert!(e.to_string().contains("loopback"), "{e}");
    std::fs::write(
        &info.config_path,
        toml.replacen(
            "# listen = \"127.0.0.1:9464\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        ),
    )
    .unwrap();
    let warm = fed.publish(BE, "warm-up").await;
    assert_eventually!(fed.has_message(FR, &warm.id).await, "warm-up never arrived");
    fed.stop(BE).await;
    fed.restart(BE).await;
    let m = fed.publish(BE, "counted").await;
    assert_eventually!(fed.has_message(FR, &m.id).await, "message never arrived");

    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics endpoint listening");
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    sock.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(
        body.contains("bluewire_routing_decisions_total{direction=\"egress\",outcome=\"allow\",rule=\"allowed\"}"),
        "{body}"
    );
    assert!(body.contains("bluewire_messages_published_total"), "{body}");
    // The store's write transactions since this start: at least the published message's.
    let commits: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("bluewire_store_commits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no store commit counter in:\n{body}"));
    assert!(commits >= 1, "{body}");
    assert!(
        body.contains("# TYPE bluewire_store_commits_total counter"),
        "{body}"
    );
}
