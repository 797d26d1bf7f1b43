//! The directory: organisations this node knows — their verified node
//! certificates, the CA-asserted profiles in them, and the message-signing
//! keys they certify — in memory and persisted in the store. Every entry
//! comes from a certificate that verified against the federation root; it
//! must never take an attribute from anything an organisation merely says.

use std::sync::Arc;

use dashmap::DashMap;
use tracing::warn;

use crate::cluster::ClusterState;
use crate::pki::{OrgProfile, PeerIdentity};
use crate::store::Store;
use bluewire_proto::v1 as pb;

/// Separates an organisation from a certificate serial in the store's directory names of
/// earlier certificates ("ORG#SERIAL"; organisation ids have no '#').
const HISTORY: char = '#';

/// Known organisations and their certified keys (persisted in the store the
/// caller passes, so this holds no store handle of its own).
#[derive(Debug)]
pub struct Directory {
    me: Arc<OrgProfile>,
    /// key id → (organisation, hybrid public key: Ed25519 || ML-DSA-65).
    keys: DashMap<String, (String, Vec<u8>)>,
    /// organisation → (node certificate DER, profile).
    /// Profiles are shared, not copied: routing looks two up per message and peer (issue #12).
    certs: DashMap<String, (Vec<u8>, Arc<OrgProfile>)>,
    /// key id → serial (lowercase hex) of the latest verified certificate that certifies it,
    /// for revocation: what a revoked certificate's keys signed since it stopped being
    /// trusted is refused, and suspect where already held.
    serials: DashMap<String, String>,
}

impl Directory {
    pub fn new(me: OrgProfile) -> Self {
        Self {
            me: Arc::new(me),
            keys: DashMap::new(),
            certs: DashMap::new(),
            serials: DashMap::new(),
        }
    }

    /// Load what the store remembers, verifying every certificate again.
    pub async fn load(
        &self,
        store: &Store,
        root_der: &[u8],
    ) -> Result<(), crate::store::StoreError> {
        self.learn_keys(store, &self.me).await;
        let entries = store.directory()?;
        // Earlier certificates first ("ORG#SERIAL": which certificate certified which key,
        // for revocation), then each organisation's current one ("ORG").
        for history in [true, false] {
            for (name, der) in &entries {
                let (org, is_history) = match name.split_once(HISTORY) {
                    Some((org, _)) => (org, true),
                    None => (name.as_str(), false),
                };
                if is_history != history {
                    continue;
                }
                let chain = [rustls::pki_types::CertificateDer::from(der.clone())];
                if let Ok(PeerIdentity::Node { profile, .. }) =
                    crate::pki::identity_from_chain(&chain, root_der)
                    && profile.org == org
                {
                    self.learn_keys(store, &profile).await;
                    self.note_serials(&profile, der);
                    if !history {
                        self.certs
                            .insert(org.to_string(), (der.clone(), Arc::new(profile)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Keep this node's own certificate among the earlier ones (`ORG#SERIAL`), so that after
    /// `pki rotate` the keys it certified stay tied to it across restarts: what they signed
    /// is verified, and judged against the revocation list, like any other organisation's.
    pub async fn remember_own(&self, store: &Store, cert_der: &[u8]) {
        let Ok(serial) = crate::pki::serial_hex(cert_der) else {
            return;
        };
        let name = format!("{}{HISTORY}{serial}", self.me.org);
        let held = store
            .directory()
            .map(|d| d.iter().any(|(n, _)| *n == name))
            .unwrap_or(false);
        if !held && let Err(e) = store.put_directory(&name, cert_der).await {
            warn!(error = %e, "could not persist this node's own certificate");
        }
    }

    /// Remember the signing keys a verified certificate certifies.
    pub async fn learn_keys(&self, store: &Store, profile: &OrgProfile) {
        for k in &profile.signing_keys {
            if self.keys.contains_key(&k.key_id) {
                continue;
            }
            let pk = match k.public_key(&profile.org) {
                Ok(pk) => pk,
                Err(e) => {
                    warn!(peer.org = %profile.org, key.id = %k.key_id, error = %e, "certificate carries an unusable signing key");
                    continue;
                }
            };
            if let Err(e) = store.put_key(&k.key_id, &profile.org, &pk).await {
                warn!(error = %e, "could not persist a peer signing key");
            }
            self.keys
                .insert(k.key_id.clone(), (profile.org.clone(), pk));
        }
    }

    /// Remember an organisation's verified node certificate (and its keys). It becomes the
    /// organisation's current certificate (profile, endpoint) unless the one held was issued
    /// later: a cluster log or a forwarded envelope carrying an earlier certificate never
    /// rolls the organisation back. Its keys are learnt either way, tied to it.
    pub async fn learn(&self, store: &Store, profile: &OrgProfile, cert_der: &[u8]) {
        if profile.org == self.me.org {
            return;
        }
        self.learn_keys(store, profile).await;
        let held = self.cert(&profile.org);
        if held.as_deref() == Some(cert_der) {
            return;
        }
        let serial = crate::pki::serial_hex(cert_der).ok();
        let noted = serial.as_ref().is_some_and(|serial| {
            profile
                .signing_keys
                .iter()
                .all(|k| self.key_serial(&k.key_id).as_ref() == Some(serial))
        });
        self.note_serials(profile, cert_der);
        let current = held.is_none_or(|h| !self.newer_held(&h, cert_der));
        // Kept under its serial too: the keys it certifies stay tied to it after the
        // organisation's next certificate replaces it, and across restarts.
        let history = serial
            .filter(|_| !noted)
            .map(|serial| format!("{}{HISTORY}{serial}", profile.org));
        let names = [current.then(|| profile.org.clone()), history];
        for name in names.into_iter().flatten() {
            if let Err(e) = store.put_directory(&name, cert_der).await {
                warn!(error = %e, "could not persist a directory entry");
            }
        }
        if current {
            self.certs.insert(
                profile.org.clone(),
                (cert_der.to_vec(), Arc::new(profile.clone())),
            );
        }
    }

    /// Was `held` issued later than `other` (by notBefore)?
    fn newer_held(&self, held: &[u8], other: &[u8]) -> bool {
        let issued = |d: &[u8]| crate::pki::validity_ms(d).map_or(i64::MIN, |v| v.0);
        issued(held) > issued(other)
    }

    /// A CA-certified signing key by id: (organisation, hybrid public key). A store that
    /// cannot be read counts as not knowing the key; where that must not turn into a
    /// permanent refusal, ask [`Directory::readable`] first.
    pub fn key(&self, store: &Store, key_id: &str) -> Option<(String, Vec<u8>)> {
        self.key_checked(store, key_id).ok().flatten()
    }

    /// Like [`Directory::key`], but a store error is an error, not "unknown key".
    pub fn key_checked(
        &self,
        store: &Store,
        key_id: &str,
    ) -> Result<Option<(String, Vec<u8>)>, crate::store::StoreError> {
        if let Some(k) = self.keys.get(key_id) {
            return Ok(Some(k.clone()));
        }
        let Some(k) = store.get_key(key_id)? else {
            return Ok(None);
        };
        self.keys.insert(key_id.to_string(), k.clone());
        Ok(Some(k))
    }

    /// Can every key `env` names be looked up (known or not)? An error means the store
    /// could not be read: the envelope must be answered "retry later", not refused.
    pub fn readable(
        &self,
        store: &Store,
        env: &pb::Envelope,
    ) -> Result<(), crate::store::StoreError> {
        self.key_checked(store, &env.key_id)?;
        if let Some(f) = &env.forwarding {
            self.key_checked(store, &f.key_id)?;
        }
        Ok(())
    }

    /// A CA-asserted profile: our own, a cluster member's (from the cluster's
    /// log), or one from a certificate this node has verified.
    pub fn profile(&self, org: &str, cluster: Option<&ClusterState>) -> Option<Arc<OrgProfile>> {
        if org == self.me.org {
            return Some(self.me.clone());
        }
        if let Some(m) = cluster.and_then(|c| c.members.get(org)) {
            return Some(m.profile.clone());
        }
        self.certs.get(org).map(|d| d.1.clone())
    }

    /// Tie the signing keys `profile` certifies to the serial of `cert_der` (this node's own
    /// certificate at start, every verified certificate when learnt).
    pub fn note_serials(&self, profile: &OrgProfile, cert_der: &[u8]) {
        if let Ok(serial) = crate::pki::serial_hex(cert_der) {
            // Signing and encryption keys alike: what a revoked certificate certified is not
            // trusted to sign, nor encrypted to.
            let ids = profile.signing_keys.iter().map(|k| &k.key_id);
            for id in ids.chain(profile.encryption_keys.iter().map(|k| &k.key_id)) {
                self.serials.insert(id.clone(), serial.clone());
            }
        }
    }

    /// The serial of the certificate this node learnt signing key `key_id` from.
    pub fn key_serial(&self, key_id: &str) -> Option<String> {
        self.serials.get(key_id).map(|s| s.clone())
    }

    /// An organisation's verified node certificate (DER).
    pub fn cert(&self, org: &str) -> Option<Vec<u8>> {
        self.certs.get(org).map(|d| d.0.clone())
    }

    /// Is `der` a node certificate this node has verified (of any organisation)?
    pub fn holds_cert(&self, der: &[u8]) -> bool {
        self.certs.iter().any(|e| e.value().0 == der)
    }

    /// Has this node verified `org`'s node certificate?
    pub fn knows(&self, org: &str) -> bool {
        self.certs.contains_key(org)
    }

    /// The endpoint `org`'s certificate names.
    pub fn endpoint(&self, org: &str) -> Option<String> {
        self.certs.get(org).map(|d| d.1.endpoint.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> OrgProfile {
        OrgProfile {
            org: "org-a".into(),
            country: "BE".into(),
            org_type: "csirt".into(),
            levels: vec![crate::pki::Level::Technical],
            sectors: vec![],
            accreditations: vec![],
            endpoint: "https://127.0.0.1:1".into(),
            signing_keys: vec![],
            encryption_keys: vec![],
            functions: vec![],
        }
    }

    /// A key lookup the store cannot answer is an error, never "unknown key" (which
    /// refuses an envelope for good); keys already in memory still answer.
    #[tokio::test]
    async fn a_store_that_cannot_be_read_is_not_an_unknown_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_key("org-b/1", "org-b", b"pk-b").await.unwrap();
        store.put_key("org-c/1", "org-c", b"pk-c").await.unwrap();
        let d = Directory::new(me());
        assert_eq!(d.key(&store, "org-b/1").unwrap().0, "org-b"); // now cached
        let env = |key_id: &str| pb::Envelope {
            key_id: key_id.into(),
            ..Default::default()
        };
        assert!(
            d.readable(&store, &env("org-z/1")).is_ok(),
            "unknown is not unreadable"
        );

        store.close_as_after_an_io_error();
        assert!(d.key_checked(&store, "org-b/1").unwrap().is_some());
        assert!(d.readable(&store, &env("org-b/1")).is_ok());
        let forwarded = pb::Envelope {
            forwarding: Some(pb::Forwarding {
                key_id: "org-c/1".into(),
                ..Default::default()
            }),
            ..env("org-b/1")
        };
        assert!(d.key_checked(&store, "org-c/1").is_err());
        assert!(d.readable(&store, &env("org-c/1")).is_err());
        assert!(d.readable(&store, &forwarded).is_err());
        assert!(d.key(&store, "org-c/1").is_none());
    }

    #[tokio::test]
    async fn a_held_certificate_is_recognised_by_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Directory::new(me());
        let mut b = me();
        b.org = "org-b".into();
        assert!(!d.holds_cert(b"cert of org-b"));
        d.learn(&store, &b, b"cert of org-b").await;
        assert!(d.holds_cert(b"cert of org-b"));
        assert!(!d.holds_cert(b"cert of org-c"));
        // Our own certificate is never learnt as a peer's.
        d.learn(&store, &me(), b"cert of org-a").await;
        assert!(!d.holds_cert(b"cert of org-a"));
    }

    /// Which certificate certified which key survives the organisation's next certificate
    /// and a restart: revoking the earlier one still distrusts the keys it certified.
    #[tokio::test]
    async fn keys_stay_tied_to_the_certificate_that_certified_them() {
        let ca = crate::pki::FederationCa::generate("dir tests").unwrap();
        let issue = || {
            let b = ca
                .issue_org(&crate::pki::OrgRequest {
                    profile: crate::known::testkit::profile("org-b"),
                    validity_days: 30,
                })
                .unwrap();
            let der = crate::pki::load_certs_pem(&b.node.cert_pem).unwrap()[0].to_vec();
            let Ok(PeerIdentity::Node { profile, serial }) = crate::pki::identity_from_chain(
                &[rustls::pki_types::CertificateDer::from(der.clone())],
                ca.cert_der().as_ref(),
            ) else {
                panic!("node certificate")
            };
            (profile, serial, der)
        };
        let (first, first_serial, first_der) = issue();
        // Certificates carry their issue time to the second.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (second, second_serial, second_der) = issue();
        let (k1, k2) = (
            &first.signing_keys[0].key_id,
            &second.signing_keys[0].key_id,
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Directory::new(me());
        d.learn(&store, &first, &first_der).await;
        d.learn(&store, &second, &second_der).await;
        let check = |d: &Directory| {
            assert_eq!(d.key_serial(k1).as_deref(), Some(first_serial.as_str()));
            assert_eq!(d.key_serial(k2).as_deref(), Some(second_serial.as_str()));
            assert_eq!(d.cert("org-b").as_deref(), Some(second_der.as_slice()));
        };
        check(&d);
        // Learnt again later (a cluster log, a forwarded envelope), the earlier certificate
        // does not roll the organisation back; its keys stay known and tied to it.
        assert!(d.newer_held(&second_der, &first_der));
        d.learn(&store, &first, &first_der).await;
        check(&d);
        // A restart: only what the store kept.
        let again = Directory::new(me());
        again.load(&store, ca.cert_der().as_ref()).await.unwrap();
        check(&again);
        assert!(
            again.key(&store, k1).is_some(),
            "the earlier key is still known"
        );
    }
}
