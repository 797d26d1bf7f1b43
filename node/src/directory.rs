//! The directory: organisations this node knows — their verified node
//! certificates, the CA-asserted profiles in them, and the message-signing
//! keys they certify — in memory and persisted in the store. Every entry
//! comes from a certificate that verified against the federation root; it
//! must never take an attribute from anything an organisation merely says.

use dashmap::DashMap;
use tracing::warn;

use crate::cluster::ClusterState;
use crate::pki::{OrgProfile, PeerIdentity};
use crate::store::Store;

/// Known organisations and their certified keys (persisted in the store the
/// caller passes, so this holds no store handle of its own).
#[derive(Debug)]
pub struct Directory {
    me: OrgProfile,
    /// key id → (organisation, raw Ed25519 public key).
    keys: DashMap<String, (String, Vec<u8>)>,
    /// organisation → (node certificate DER, profile).
    certs: DashMap<String, (Vec<u8>, OrgProfile)>,
}

impl Directory {
    pub fn new(me: OrgProfile) -> Self {
        Self {
            me,
            keys: DashMap::new(),
            certs: DashMap::new(),
        }
    }

    /// Load what the store remembers, verifying every certificate again.
    pub async fn load(
        &self,
        store: &Store,
        root_der: &[u8],
    ) -> Result<(), crate::store::StoreError> {
        self.learn_keys(store, &self.me).await;
        for (org, der) in store.directory()? {
            let chain = [rustls::pki_types::CertificateDer::from(der.clone())];
            if let Ok(PeerIdentity::Node { profile, .. }) =
                crate::pki::identity_from_chain(&chain, root_der)
                && profile.org == org
            {
                self.learn_keys(store, &profile).await;
                self.certs.insert(org, (der, profile));
            }
        }
        Ok(())
    }

    /// Remember the signing keys a verified certificate certifies.
    pub async fn learn_keys(&self, store: &Store, profile: &OrgProfile) {
        for k in &profile.signing_keys {
            if self.keys.contains_key(&k.key_id) {
                continue;
            }
            let Ok(pk) = hex::decode(&k.public_key_hex) else {
                warn!(peer.org = %profile.org, key.id = %k.key_id, "certificate carries an undecodable signing key");
                continue;
            };
            if let Err(e) = store.put_key(&k.key_id, &profile.org, &pk).await {
                warn!(error = %e, "could not persist a peer signing key");
            }
            self.keys
                .insert(k.key_id.clone(), (profile.org.clone(), pk));
        }
    }

    /// Remember an organisation's verified node certificate (and its keys).
    pub async fn learn(&self, store: &Store, profile: &OrgProfile, cert_der: &[u8]) {
        if profile.org == self.me.org {
            return;
        }
        self.learn_keys(store, profile).await;
        let known = self
            .certs
            .get(&profile.org)
            .is_some_and(|d| d.0 == cert_der);
        if !known {
            if let Err(e) = store.put_directory(&profile.org, cert_der).await {
                warn!(error = %e, "could not persist a directory entry");
            }
            self.certs
                .insert(profile.org.clone(), (cert_der.to_vec(), profile.clone()));
        }
    }

    /// A CA-certified signing key by id: (organisation, raw public key).
    pub fn key(&self, store: &Store, key_id: &str) -> Option<(String, Vec<u8>)> {
        if let Some(k) = self.keys.get(key_id) {
            return Some(k.clone());
        }
        let k = store.get_key(key_id).ok().flatten()?;
        self.keys.insert(key_id.to_string(), k.clone());
        Some(k)
    }

    /// A CA-asserted profile: our own, a cluster member's (from the cluster's
    /// log), or one from a certificate this node has verified.
    pub fn profile(&self, org: &str, cluster: Option<&ClusterState>) -> Option<OrgProfile> {
        if org == self.me.org {
            return Some(self.me.clone());
        }
        if let Some(m) = cluster.and_then(|c| c.members.get(org)) {
            return Some(m.profile.clone());
        }
        self.certs.get(org).map(|d| d.1.clone())
    }

    /// An organisation's verified node certificate (DER).
    pub fn cert(&self, org: &str) -> Option<Vec<u8>> {
        self.certs.get(org).map(|d| d.0.clone())
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
