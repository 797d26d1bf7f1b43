//! A federation of real node processes on loopback, for `bluewire demo` and
//! `bluewire bench`: the files come from [`provision::federation`] (one root
//! CA, one bundle per organisation, an operator and an analyst per
//! organisation, a config per node); this module picks the ports and runs
//! the processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bluewire_node::client::Connection;
use bluewire_node::pki::{Function, Level};
use bluewire_node::provision::{self, ConfigEdit, FederationOptions, OrgPlan, ProvisionError};
use bluewire_proto::v1 as pb;

#[derive(Debug, Clone)]
pub struct OrgSpec {
    pub org: &'static str,
    pub country: &'static str,
    pub org_type: &'static str,
    pub levels: Vec<Level>,
    /// Blueprint functions its certificate asserts.
    pub functions: Vec<Function>,
    pub what: &'static str,
    /// List every other organisation as a static peer in its node.toml.
    pub static_peers: bool,
}

pub struct LocalOrg {
    pub spec: OrgSpec,
    pub endpoint: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl LocalOrg {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("node.toml")
    }
    pub fn user_dir(&self, user: &str) -> PathBuf {
        self.dir.join("users").join(user)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
            let _ = std::fs::remove_file(self.dir.join("node.pid"));
        }
    }
}

pub struct LocalFederation {
    pub orgs: Vec<LocalOrg>,
}

/// A loopback port nothing listens on now, and not handed out before by this process: the
/// listener is closed at once, so the kernel may offer the same port again before the node
/// that was given it binds it (the demo once gave csirt-be's TAXII listener cert-eu's port).
pub(crate) fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    // Bounded: the kernel hands out ephemeral ports round the range, so a repeat is rare.
    for _ in 0..64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        let addr = l.local_addr()?;
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return Ok(addr);
        }
    }
    anyhow::bail!("no loopback port free that this process has not handed out already")
}

impl LocalFederation {
    /// Generate every key, certificate and config under `dir`: the
    /// federation in `dir/federation-ca`, each organisation in `dir/ORG`,
    /// its node.toml with delivery retries capped at 2 s and then `edits`.
    pub fn create(dir: &Path, specs: &[OrgSpec], edits: &[ConfigEdit]) -> anyhow::Result<Self> {
        let plans = specs
            .iter()
            .map(|s| {
                Ok(OrgPlan {
                    org: s.org.to_string(),
                    country: s.country.to_string(),
                    org_type: s.org_type.to_string(),
                    levels: s.levels.clone(),
                    functions: s.functions.clone(),
                    listen: free_port()?,
                    static_peers: s.static_peers,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut config_edits = vec![ConfigEdit::replace(
            "retry_max_ms = 30000",
            "retry_max_ms = 2000",
        )];
        config_edits.extend_from_slice(edits);
        let options = FederationOptions {
            ca_name: "Bluewire demo federation root CA".into(),
            config_edits,
        };
        let provisioned = match provision::federation(dir, &plans, &options) {
            Err(ProvisionError::Exists { dir, .. }) => bail!(
                "{} already holds a federation; pick another --dir or remove it",
                dir.display()
            ),
            r => r?,
        };
        let orgs = specs
            .iter()
            .zip(provisioned.orgs)
            .map(|(spec, o)| LocalOrg {
                spec: spec.clone(),
                endpoint: o.endpoint,
                dir: o.dir,
                child: None,
            })
            .collect();
        Ok(Self { orgs })
    }

    /// Start every node as a child process of this binary (`bluewire node run`).
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.orgs.len() {
            self.start_index(i)?;
        }
        Ok(())
    }

    /// Start the node of `org` (its log starts afresh).
    pub fn start(&mut self, org: &str) -> anyhow::Result<()> {
        let i = self.index(org);
        self.start_index(i)
    }

    fn start_index(&mut self, i: usize) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the bluewire binary")?;
        let o = &mut self.orgs[i];
        let log = std::fs::File::create(o.dir.join("node.log"))?;
        let child = Command::new(&exe)
            .args(["node", "run", "--config"])
            .arg(o.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the node of {}", o.spec.org))?;
        std::fs::write(o.dir.join("node.pid"), format!("{}\n", child.id()))?;
        o.child = Some(child);
        Ok(())
    }

    fn index(&self, org: &str) -> usize {
        self.orgs
            .iter()
            .position(|o| o.spec.org == org)
            .expect("org is part of the local federation")
    }

    pub fn org(&self, org: &str) -> &LocalOrg {
        &self.orgs[self.index(org)]
    }

    pub fn connect(&self, org: &str, user: &str) -> anyhow::Result<Connection> {
        let o = self.org(org);
        let u = o.user_dir(user);
        Connection::open(
            &o.endpoint,
            &u.join("ca.crt"),
            &u.join("user.crt"),
            &u.join("user.key"),
        )
        .map_err(|e| anyhow::anyhow!(e))
    }

    /// Wait until every running node answers Status (bounded).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.orgs.len() {
            if self.orgs[i].child.is_some() {
                self.wait_index(i, deadline, timeout).await?;
            }
        }
        Ok(())
    }

    /// Wait until the node of `org` answers Status (bounded).
    pub async fn wait_org_ready(&mut self, org: &str, timeout: Duration) -> anyhow::Result<()> {
        let i = self.index(org);
        self.wait_index(i, Instant::now() + timeout, timeout).await
    }

    async fn wait_index(
        &mut self,
        i: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let org = self.orgs[i].spec.org;
        let conn = self.connect(org, "operator")?;
        loop {
            if let Some(child) = self.orgs[i].child.as_mut()
                && let Ok(Some(st)) = child.try_wait()
            {
                let log =
                    std::fs::read_to_string(self.orgs[i].dir.join("node.log")).unwrap_or_default();
                bail!("node of {org} exited ({st}) during start-up:\n{log}");
            }
            match conn.admin().status(pb::StatusRequest {}).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!("node of {org} not ready after {timeout:?}: {}", e.message())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// SIGTERM every node, wait for it to exit (SIGKILL after 10 s).
    pub fn stop_all(&mut self) {
        for o in &mut self.orgs {
            o.stop();
        }
    }

    /// SIGKILL the node of `org` (a crash: no clean shutdown) and reap it.
    pub fn kill(&mut self, org: &str) {
        let i = self.index(org);
        let o = &mut self.orgs[i];
        if let Some(mut c) = o.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(o.dir.join("node.pid"));
        }
    }

    /// SIGTERM the node of `org`, wait for it to exit (SIGKILL after 10 s).
    pub fn stop(&mut self, org: &str) {
        let i = self.index(org);
        self.orgs[i].stop();
    }

    /// Leave the processes running when this handle goes away.
    pub fn detach(&mut self) {
        for o in &mut self.orgs {
            o.child.take();
        }
    }

    /// Resident set size of `org`'s node (KiB; 0 when it is not running).
    pub fn rss_kib_of(&self, org: &str) -> u64 {
        self.rss_kib()
            .into_iter()
            .find(|(o, _)| o == org)
            .map_or(0, |(_, k)| k)
    }

    /// Resident set size of each node process (KiB), from /proc.
    pub fn rss_kib(&self) -> Vec<(String, u64)> {
        self.orgs
            .iter()
            .filter_map(|o| {
                let pid = o.pid()?;
                let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let kb = s
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((o.spec.org.to_string(), kb))
            })
            .collect()
    }
}

impl Drop for LocalFederation {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod free_port_tests {
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut ports: Vec<u16> = (0..300)
            .map(|_| super::free_port().unwrap().port())
            .collect();
        ports.sort_unstable();
        let n = ports.len();
        ports.dedup();
        assert_eq!(ports.len(), n, "a port was handed out twice");
    }
}
