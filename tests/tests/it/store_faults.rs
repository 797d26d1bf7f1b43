//! A damaged store file, as after a disk fault or a stray write: the node refuses to start
//! with an error that names the file and what to do, and never serves from a damaged store
//! (a damaged page used to be read as garbage: redb panicked in the middle of a feed, which
//! ended early and looked complete).

use bluewire_node::Node;
use bluewire_node::store::{DAMAGED_MARKER, FILE_NAME};
use bluewire_tests::{OrgSpec, TestFederation, backlog, bind_port};

const MESSAGES: usize = 300;

/// Start csirt-be on its store as it is now: `Err(message)` if refused, else the number of
/// verified items in its feed.
async fn start(fed: &TestFederation) -> Result<usize, String> {
    let l = bind_port(fed.info("csirt-be").port).await;
    let node = Node::start_on(fed.config("csirt-be"), l)
        .await
        .map_err(|e| e.to_string())?;
    let feed = backlog(&fed.client("csirt-be", "analyst"), None).await;
    node.shutdown().await.expect("shutdown");
    Ok(feed.iter().filter(|i| i.verified).count())
}

fn damage(orig: &[u8], at: &[usize]) -> Vec<u8> {
    let mut b = orig.to_vec();
    for &a in at {
        let end = (a + 64).min(b.len());
        for x in &mut b[a..end] {
            *x ^= 0x5a;
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_store_is_refused_at_start_and_never_served() {
    let fed = TestFederation::new(&[OrgSpec::csirt("csirt-be", "BE")]).await;
    for i in 0..MESSAGES {
        fed.publish("csirt-be", &format!("message {i} {}", "x".repeat(300)))
            .await;
    }
    fed.stop("csirt-be").await;
    let data = fed.info("csirt-be").dir.join("data");
    let path = data.join(FILE_NAME);
    let marker = data.join(DAMAGED_MARKER);
    let orig = std::fs::read(&path).unwrap();
    let len = orig.len();

    // Damage spread over the whole file always hits live pages: refused, with the file
    // named and the way out.
    let everywhere: Vec<usize> = (0..len).step_by(16 * 4096).map(|a| a + 1000).collect();
    std::fs::write(&path, damage(&orig, &everywhere)).unwrap();
    let e = start(&fed)
        .await
        .expect_err("a store damaged throughout was served");
    assert!(
        (e.contains("damaged") || e.contains("cannot open store"))
            && e.contains(&path.display().to_string())
            && e.contains("backup"),
        "unclear refusal: {e}"
    );
    // It stays refused: redb may have rolled the file back, which can drop messages.
    if marker.exists() {
        let again = start(&fed)
            .await
            .expect_err("refused once, served the next time");
        assert!(again.contains(DAMAGED_MARKER), "{again}");
    }

    // One damaged spot at a time, header included: each start is refused or, when the
    // spot held nothing live, serves every message intact — never part of them.
    let mut refused = 0;
    for at in [
        0,
        4096,
        len / 10,
        len / 4,
        len / 3,
        len / 2,
        2 * len / 3,
        len - 5000,
    ] {
        let _ = std::fs::remove_file(&marker);
        std::fs::write(&path, damage(&orig, &[at])).unwrap();
        match start(&fed).await {
            Err(e) => {
                assert!(e.contains("backup"), "unclear refusal at {at}: {e}");
                refused += 1;
            }
            Ok(n) => assert_eq!(n, MESSAGES, "damage at byte {at}: served {n} of {MESSAGES}"),
        }
    }
    assert!(refused > 0, "no single damaged spot was noticed");

    // The intact file serves everything again.
    let _ = std::fs::remove_file(&marker);
    std::fs::write(&path, &orig).unwrap();
    assert_eq!(start(&fed).await, Ok(MESSAGES));
}

/// A tmpfs of `size` mounted on `dir` for the test's life (unmounted on drop).
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Result<SmallDisk, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(SmallDisk {
            dir: dir.to_path_buf(),
        })
    }

    fn resize(&self, size: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("remount");
        assert!(st.success(), "remount {} to {size}", self.dir.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_whose_disk_fills_asks_to_retry_loses_nothing_and_recovers() {
    use bluewire_tests::{assert_eventually, item_id, pb};
    use std::collections::HashSet;

    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    // csirt-fr's store moves onto a small disk of its own.
    fed.stop("csirt-fr").await;
    let data = fed.info("csirt-fr").dir.join("data");
    let kept = fed.info("csirt-fr").dir.join("data.kept");
    std::fs::rename(&data, &kept).unwrap();
    std::fs::create_dir(&data).unwrap();
    let disk = match SmallDisk::mount(&data, "6m") {
        Ok(d) => d,
        Err(e)
            if unsafe { libc::geteuid() } != 0 || e.to_ascii_lowercase().contains("permission") =>
        {
            eprintln!("skipped: mounting a small tmpfs needs root ({e})");
            return;
        }
        Err(e) => panic!("mount a tmpfs for csirt-fr's store: {e}"),
    };
    for f in std::fs::read_dir(&kept).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, data.join(f.file_name().unwrap())).unwrap();
    }
    fed.restart("csirt-fr").await;

    // 100 KiB messages until csirt-fr's disk is full and it asks csirt-be to retry.
    let mut published = Vec::new();
    let body = "z".repeat(100 * 1024);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        published.push(
            fed.publish("csirt-be", &format!("{} {body}", published.len()))
                .await
                .id,
        );
        let p = fed.peers("csirt-be").await;
        if p[0].outbox_depth > 5 && p[0].last_error.contains("could not store") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && published.len() < 400,
            "csirt-fr never refused for a full disk: {p:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // csirt-fr still answers, and says why when it cannot.
    match fed.admin("csirt-fr").status(pb::StatusRequest {}).await {
        Ok(_) => {}
        Err(e) => assert!(
            e.message().contains("disk") || e.message().contains("space"),
            "{e}"
        ),
    }

    // Space returns: everything queued arrives, exactly once.
    disk.resize("256m");
    assert_eventually!(
        fed.peers("csirt-be").await[0].outbox_depth == 0,
        "csirt-be's queue for csirt-fr did not drain once space returned: {:?}",
        fed.peers("csirt-be").await
    );
    let check = |feed: Vec<pb::FeedItem>| {
        let ids: Vec<String> = feed.iter().map(item_id).collect();
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), distinct.len(), "duplicates at csirt-fr");
        assert_eq!(distinct, published.iter().collect::<HashSet<_>>());
        assert!(feed.iter().all(|i| i.verified));
    };
    check(fed.feed("csirt-fr", Some("csirt-be")).await);
    // Nothing was corrupted: the store passes its integrity check on a restart.
    fed.stop("csirt-fr").await;
    fed.restart("csirt-fr").await;
    check(fed.feed("csirt-fr", Some("csirt-be")).await);
    fed.stop("csirt-fr").await;
    drop(disk);
}
