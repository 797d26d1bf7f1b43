//! Unit tests of the PKI: profiles, encodings, issuance, identities, CRLs and the files a CA
//! writes, through the module's public API and its crate-internal helpers.

use std::fs;
use std::sync::Arc;

use rcgen::{DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use time::{Duration, OffsetDateTime};

use super::ca::base_params;
use super::der::{
    der_octet_string, der_utf8string, parse_der_octet_string, parse_der_utf8string, pem_encode,
};
use super::profile::{endpoint_host, profile_extension};
use super::*;

fn profile(org: &str) -> OrgProfile {
    OrgProfile {
        org: org.into(),
        country: "BE".into(),
        org_type: "csirt".into(),
        levels: vec![Level::Technical, Level::Operational],
        sectors: vec!["energy".into()],
        accreditations: vec!["EU RESTRICTED".into()],
        endpoint: "https://127.0.0.1:7443".into(),
        signing_keys: vec![],
        encryption_keys: vec![],
        functions: Vec::new(),
    }
}

fn req(org: &str) -> OrgRequest {
    OrgRequest {
        profile: profile(org),
        validity_days: 365,
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    load_certs_pem(pem).unwrap().remove(0)
}

#[test]
fn enums_parse_and_display() {
    for l in Level::ALL {
        assert_eq!(l.to_string().parse::<Level>().unwrap(), l);
    }
    for r in UserRole::ALL {
        assert_eq!(r.to_string().parse::<UserRole>().unwrap(), r);
    }
    assert_eq!("soc-tool".parse::<UserRole>().unwrap(), UserRole::SocTool);
    assert!("boss".parse::<UserRole>().is_err());
    assert_eq!(
        serde_json::to_string(&UserRole::SocTool).unwrap(),
        "\"soc-tool\""
    );
    assert_eq!(
        serde_json::to_string(&Level::Political).unwrap(),
        "\"political\""
    );
}

#[test]
fn blueprint_functions_are_certified_in_canonical_order_and_grant_only_what_is_known() {
    for f in Function::ALL {
        assert_eq!(f.to_string().parse::<Function>().unwrap(), f);
    }
    assert_eq!(" CyClOnE ".parse::<Function>().unwrap(), Function::Cyclone);
    let e = "head-of-state".parse::<Function>().unwrap_err().to_string();
    assert!(
        e.contains("unknown blueprint function \"head-of-state\"")
            && e.contains("csirts-network, cyclone, presidency"),
        "{e}"
    );

    let ca = FederationCa::generate("Test Federation Root").unwrap();
    let root = der(ca.cert_pem());
    let mut r = req("cyclone-fr");
    r.profile.functions = vec!["presidency".into(), "cyclone".into(), "cyclone".into()];
    let bundle = ca.issue_org(&r).unwrap();
    let node = der(&bundle.node.cert_pem);
    let PeerIdentity::Node { profile: p, .. } =
        identity_from_chain(std::slice::from_ref(&node), &root).unwrap()
    else {
        panic!("a node identity");
    };
    assert_eq!(p.functions, ["cyclone", "presidency"]);
    assert!(p.holds(Function::Cyclone) && p.holds(Function::Presidency));
    assert!(!p.holds(Function::CsirtsNetwork));
    assert_eq!(
        p.known_functions(),
        [Function::Cyclone, Function::Presidency]
    );

    // The CA asserts only functions it knows.
    let mut r = req("csirt-be");
    r.profile.functions = vec!["king".into()];
    let e = ca.issue_org(&r).unwrap_err().to_string();
    assert!(e.contains("unknown blueprint function \"king\""), "{e}");

    // A profile from a newer CA naming a function this node does not know still reads; the
    // unknown function grants nothing. Profiles without functions keep their old encoding.
    let mut newer = profile("csirt-be");
    newer.functions = vec!["csirts-network".into(), "space-agency".into()];
    let json = serde_json::to_string(&newer).unwrap();
    let back: OrgProfile = serde_json::from_str(&json).unwrap();
    assert!(back.validate().is_ok());
    assert_eq!(back.known_functions(), [Function::CsirtsNetwork]);
    let plain = serde_json::to_string(&profile("csirt-be")).unwrap();
    assert!(!plain.contains("functions"), "{plain}");
    let mut bad = profile("csirt-be");
    bad.functions = vec![" cyclone".into()];
    assert!(bad.validate().is_err(), "labels are checked like sectors");
}

#[test]
fn key_id_format() {
    let id = key_id_for("csirt-be", &[1u8; 32]);
    assert!(id.starts_with("csirt-be/"));
    assert_eq!(id.len(), "csirt-be/".len() + 16);
}

#[test]
fn der_utf8string_round_trip() {
    for n in [0usize, 5, 127, 128, 300, 70_000] {
        let s = "x".repeat(n);
        assert_eq!(parse_der_utf8string(&der_utf8string(&s)).unwrap(), s);
    }
    assert!(parse_der_utf8string(&[0x04, 0x00]).is_err());
    assert!(parse_der_utf8string(&[0x0c, 0x05, b'a']).is_err());
    for n in [0usize, 127, 128, 3309] {
        let b = vec![0xa5; n];
        assert_eq!(parse_der_octet_string(&der_octet_string(&b)).unwrap(), b);
    }
    assert!(parse_der_octet_string(&[0x0c, 0x00]).is_err());
    assert!(parse_der_octet_string(&[0x04, 0x82, 0x01]).is_err());
}

#[test]
fn pem_encode_matches_rustls_pemfile() {
    for n in [0usize, 1, 2, 3, 47, 48, 49, 100] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
        let pem = pem_encode("PRIVATE KEY", &data);
        let item = rustls_pemfile::read_one(&mut pem.as_bytes())
            .unwrap()
            .unwrap();
        match item {
            rustls_pemfile::Item::Pkcs8Key(k) => assert_eq!(k.secret_pkcs8_der(), &data[..]),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn profile_extension_round_trip_and_identities() {
    let ca = FederationCa::generate("Test Federation Root").unwrap();
    let bundle = ca.issue_org(&req("csirt-be")).unwrap();
    let root = der(ca.cert_pem());

    // Profile extension round trip.
    let node = der(&bundle.node.cert_pem);
    let Some(CertProfile::Node(p)) = cert_profile(&node).unwrap() else {
        panic!("node profile missing");
    };
    let mut expected = profile("csirt-be");
    expected.signing_keys = vec![bundle.node.signing_key.clone()];
    expected.encryption_keys = vec![bundle.node.encryption_key.clone()];
    assert_eq!(p, expected);
    let Some(CertProfile::OrgCa(p)) = cert_profile(&der(&bundle.org_ca_cert_pem)).unwrap() else {
        panic!("org-ca profile missing");
    };
    assert_eq!(p, profile("csirt-be"));
    assert_eq!(cert_profile(&root).unwrap(), None);

    // Signing key matches.
    let sk =
        crate::signing::SigningKey::from_pkcs8_pem("csirt-be", &bundle.node.signing_key_pkcs8_pem)
            .unwrap();
    assert_eq!(sk.key_id(), bundle.node.signing_key.key_id);
    assert_eq!(
        sk.public_key(),
        bundle.node.signing_key.public_key("csirt-be").unwrap()
    );
    assert_eq!(
        bundle.node.signing_key,
        CertifiedKey::new("csirt-be", &sk.public_key())
    );
    // The encryption key matches what the certificate certifies, and opens what is sealed to it.
    let ek =
        crate::e2e::RecipientKey::from_pem("csirt-be", &bundle.node.encryption_key_pem).unwrap();
    let certified = bundle.node.encryption_key.public_key("csirt-be").unwrap();
    assert_eq!(ek.public_key(), certified);
    let sealed = crate::e2e::seal(
        &[(bundle.node.encryption_key.key_id.as_str(), &certified)],
        b"ctx",
        b"",
        b"m",
    )
    .unwrap();
    assert_eq!(crate::e2e::open(&ek, b"ctx", b"", &sealed).unwrap(), b"m");
    // Each half must have its length: one byte short on either side is refused.
    let mut short = bundle.node.signing_key.clone();
    short
        .public_key_hex
        .truncate(short.public_key_hex.len() - 2);
    assert!(short.public_key("csirt-be").is_err());
    let mut short = bundle.node.signing_key.clone();
    short
        .ml_dsa_public_key_hex
        .truncate(short.ml_dsa_public_key_hex.len() - 2);
    assert!(short.public_key("csirt-be").is_err());
    let mut wrong = bundle.node.encryption_key.clone();
    wrong.key_id = "csirt-be/0000000000000000".into();
    assert!(wrong.public_key("csirt-be").is_err());

    // Node identity.
    let id = identity_from_chain(std::slice::from_ref(&node), &root).unwrap();
    assert_eq!(
        id,
        PeerIdentity::Node {
            profile: expected.clone(),
            serial: serial_hex(&node).unwrap()
        }
    );
    // A copy of the root in the presented chain is tolerated.
    assert!(identity_from_chain(&[node.clone(), root.clone()], &root).is_ok());

    // User identity.
    let user = issue_user(
        &bundle.org_ca_cert_pem,
        &bundle.org_ca_key_pem,
        "Alice Analyst",
        UserRole::Analyst,
        30,
    )
    .unwrap();
    let chain = load_certs_pem(&user.cert_chain_pem).unwrap();
    assert_eq!(chain.len(), 2);
    let id = identity_from_chain(&chain, &root).unwrap();
    assert_eq!(
        id,
        PeerIdentity::User {
            org: "csirt-be".into(),
            name: "Alice Analyst".into(),
            role: UserRole::Analyst,
            serial: serial_hex(&chain[0]).unwrap(),
            org_ca_serial: serial_hex(&chain[1]).unwrap(),
        }
    );
    assert_eq!(id.org(), "csirt-be");
    // User leaf without its org CA → rejected.
    assert!(identity_from_chain(&chain[..1], &root).is_err());
    // Org CA as leaf → rejected.
    assert!(identity_from_chain(&chain[1..], &root).is_err());

    // Serials are 16 bytes and recorded in the index.
    let serials = ca.serials_of_org("csirt-be");
    assert_eq!(serials.len(), 2);
    assert!(serials.contains(&serial_hex(&node).unwrap()));
    assert!(serials.contains(&serial_hex(&chain[1]).unwrap()));
    assert!(serials.iter().all(|s| s.len() == 32));
}

/// Sign an arbitrary leaf with an org CA, bypassing issue_user's checks.
fn forge_with_org_ca(bundle: &OrgBundle, p: CertProfile) -> Vec<CertificateDer<'static>> {
    let ca_der = der(&bundle.org_ca_cert_pem);
    let ca_key = KeyPair::from_pem(&bundle.org_ca_key_pem).unwrap();
    let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = base_params(OffsetDateTime::now_utc() + Duration::days(1));
    params.distinguished_name.push(DnType::CommonName, "forged");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
        .custom_extensions
        .push(profile_extension(&p).unwrap());
    let cert = params.signed_by(&key, &issuer).unwrap();
    vec![cert.der().clone(), ca_der]
}

#[test]
fn user_claiming_other_org_is_rejected() {
    let ca = FederationCa::generate("Root").unwrap();
    let a = ca.issue_org(&req("org-a")).unwrap();
    let root = der(ca.cert_pem());
    let chain = forge_with_org_ca(
        &a,
        CertProfile::User {
            org: "org-b".into(),
            name: "mallory".into(),
            role: UserRole::Operator,
        },
    );
    let err = identity_from_chain(&chain, &root).unwrap_err().to_string();
    assert!(err.contains("org-b") && err.contains("org-a"), "{err}");
}

#[test]
fn org_ca_cannot_vouch_for_node() {
    let ca = FederationCa::generate("Root").unwrap();
    let a = ca.issue_org(&req("org-a")).unwrap();
    let root = der(ca.cert_pem());
    let chain = forge_with_org_ca(&a, CertProfile::Node(profile("org-a")));
    assert!(matches!(
        identity_from_chain(&chain, &root),
        Err(PkiError::Identity(_))
    ));
    // Even presented alone (no intermediate), the issuer is not the root.
    assert!(matches!(
        identity_from_chain(&chain[..1], &root),
        Err(PkiError::Identity(_))
    ));
}

#[test]
fn other_federation_root_is_rejected() {
    let ours = FederationCa::generate("Root").unwrap();
    // Same CN, so the issuer DN matches: only the signature check can catch it.
    let theirs = FederationCa::generate("Root").unwrap();
    let root = der(ours.cert_pem());
    let b = theirs.issue_org(&req("csirt-be")).unwrap();
    let node = der(&b.node.cert_pem);
    let err = identity_from_chain(&[node], &root).unwrap_err().to_string();
    assert!(err.contains("signature"), "{err}");
    let user = issue_user(
        &b.org_ca_cert_pem,
        &b.org_ca_key_pem,
        "eve",
        UserRole::Analyst,
        5,
    )
    .unwrap();
    let chain = load_certs_pem(&user.cert_chain_pem).unwrap();
    assert!(identity_from_chain(&chain, &root).is_err());
}

#[test]
fn crl_round_trip_and_foreign_crl() {
    let mut ca = FederationCa::generate("Root").unwrap();
    let root = der(ca.cert_pem());
    assert!(crl_serials(ca.crl_pem(), &root).unwrap().is_empty());
    ca.issue_org(&req("org-a")).unwrap();
    ca.issue_org(&req("org-b")).unwrap();
    let a = ca.serials_of_org("org-a");
    let crl = ca.revoke(&a).unwrap();
    let mut got = crl_serials(&crl, &root).unwrap();
    got.sort();
    let mut want = a.clone();
    want.sort();
    assert_eq!(got, want);
    // Cumulative.
    let b = ca.serials_of_org("org-b");
    let crl2 = ca.revoke(&b[..1]).unwrap();
    let info = parse_crl(&crl2, &root).unwrap();
    assert_eq!(info.serials.len(), 3);
    assert_eq!(info.crl_number.as_deref(), Some("3"));
    // Revoked without a stated compromise: distrusted from the revocation.
    let since: std::collections::HashMap<_, _> = info.distrusted_since.iter().cloned().collect();
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    assert!(
        a.iter()
            .all(|s| (now_ms - 60_000..=now_ms).contains(&since[s]))
    );
    // A stated compromise (may come after the revocation): from that second on.
    let crl3 = ca.revoke_compromised(&a[..1], Some(1_700_000_000)).unwrap();
    let info = parse_crl(&crl3, &root).unwrap();
    let since: std::collections::HashMap<_, _> = info.distrusted_since.into_iter().collect();
    assert_eq!(since[&a[0]], 1_700_000_000_000);
    assert!(since[&a[1]] > 1_700_000_000_000);
    assert_eq!(info.serials.len(), 3);
    let listed = ca.issued().into_iter().find(|c| c.serial == a[0]).unwrap();
    assert_eq!(listed.compromised_since, Some(1_700_000_000));
    // Not in the future.
    let e = ca
        .revoke_compromised(&a[..1], Some(now_ms / 1000 + 3600))
        .unwrap_err();
    assert!(e.to_string().contains("future"), "{e}");
    // Unknown serial.
    assert!(ca.revoke(&["abcdef".into()]).is_err());
    // CRL from another CA (same DN) is rejected by signature.
    let other = FederationCa::generate("Root").unwrap();
    let err = crl_serials(other.crl_pem(), &root).unwrap_err().to_string();
    assert!(err.contains("not signed by the federation root"), "{err}");
}

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = FederationCa::generate("Root").unwrap();
    ca.issue_org(&req("org-a")).unwrap();
    let s = ca.serials_of_org("org-a");
    ca.revoke(&s[..1]).unwrap();
    ca.save(dir.path()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.key", "ca-ml-dsa.key"] {
            let m = fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600, "{f}");
        }
    }
    // Saving the same CA again is fine; a different CA is refused.
    ca.save(dir.path()).unwrap();
    let other = FederationCa::generate("Root").unwrap();
    assert!(matches!(
        other.save(dir.path()),
        Err(PkiError::AlreadyExists(_))
    ));

    let mut loaded = FederationCa::load(dir.path()).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    assert_eq!(loaded.serials_of_org("org-a"), s);
    let root = der(loaded.cert_pem());
    assert_eq!(
        crl_serials(loaded.crl_pem(), &root).unwrap(),
        vec![s[0].clone()]
    );
    // The loaded CA issues certificates that chain to the same root.
    let b = loaded.issue_org(&req("org-b")).unwrap();
    let node = der(&b.node.cert_pem);
    assert!(identity_from_chain(&[node], &root).is_ok());
    let crl = loaded.revoke(&s[1..]).unwrap();
    assert_eq!(crl_serials(&crl, &root).unwrap().len(), 2);
    loaded.save(dir.path()).unwrap();
    assert_eq!(
        FederationCa::load(dir.path())
            .unwrap()
            .serials_of_org("org-b")
            .len(),
        2
    );

    // Bundles.
    let bdir = dir.path().join("org-b");
    b.save(&bdir).unwrap();
    for f in [
        "node.crt",
        "node.key",
        "signing.key",
        "encryption.key",
        "org-ca.crt",
        "org-ca.key",
        "ca.crt",
    ] {
        assert!(bdir.join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["node.key", "signing.key", "encryption.key", "org-ca.key"] {
            let m = fs::metadata(bdir.join(f)).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600, "{f}");
        }
    }
    load_key_pem(&fs::read_to_string(bdir.join("node.key")).unwrap()).unwrap();
    let u = issue_user(
        &fs::read_to_string(bdir.join("org-ca.crt")).unwrap(),
        &fs::read_to_string(bdir.join("org-ca.key")).unwrap(),
        "bob",
        UserRole::SocTool,
        10,
    )
    .unwrap();
    let udir = dir.path().join("bob");
    u.save(&udir, loaded.cert_pem()).unwrap();
    assert_eq!(
        load_certs_pem(&fs::read_to_string(udir.join("user.crt")).unwrap())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn bad_input_rejected_with_clear_message() {
    for bad in [
        "",
        "a",
        "CSIRT-BE",
        "csirt_be",
        "-csirt",
        "csirt-",
        "csirt be",
        &"a".repeat(65),
    ] {
        let err = check_org_id(bad).unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{bad:?}: {err}");
    }
    check_org_id("csirt-be").unwrap();
    let ca = FederationCa::generate("Root").unwrap();
    let mut r = req("Bad Org");
    assert!(
        ca.issue_org(&r)
            .unwrap_err()
            .to_string()
            .contains("organisation id")
    );
    r = req("ok-org");
    r.profile.country = "be".into();
    assert!(
        ca.issue_org(&r)
            .unwrap_err()
            .to_string()
            .contains("country")
    );
    r = req("ok-org");
    r.profile.endpoint = "http://x:1".into();
    assert!(
        ca.issue_org(&r)
            .unwrap_err()
            .to_string()
            .contains("https://")
    );
    r = req("ok-org");
    r.validity_days = 0;
    assert!(ca.issue_org(&r).is_err());
    r = req("ok-org");
    r.profile.levels.clear();
    assert!(ca.issue_org(&r).is_err());
    assert!(ca.serials_of_org("ok-org").is_empty());
    let b = ca.issue_org(&req("ok-org")).unwrap();
    assert!(
        issue_user(
            &b.org_ca_cert_pem,
            &b.org_ca_key_pem,
            "",
            UserRole::Analyst,
            1
        )
        .is_err()
    );
    // The root is not an org CA.
    assert!(issue_user(&b.ca_cert_pem, &b.org_ca_key_pem, "x", UserRole::Analyst, 1).is_err());
    // Mismatched key.
    assert!(
        issue_user(
            &b.org_ca_cert_pem,
            &b.node.key_pem,
            "x",
            UserRole::Analyst,
            1
        )
        .is_err()
    );
}

#[test]
fn endpoint_hosts() {
    assert_eq!(
        endpoint_host("https://127.0.0.1:7443").unwrap(),
        "127.0.0.1"
    );
    assert_eq!(endpoint_host("https://[::1]:7443/").unwrap(), "::1");
    assert_eq!(
        endpoint_host("https://Node.Example:1").unwrap(),
        "node.example"
    );
    assert!(endpoint_host("https://:1").is_err());
    assert!(endpoint_host("https://a b:1").is_err());
}

#[test]
fn rustls_accepts_user_chain_and_node_cert() {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut ca = FederationCa::generate("Root").unwrap();
    let bundle = ca.issue_org(&req("csirt-be")).unwrap();
    let root = der(ca.cert_pem());
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let roots = Arc::new(roots);
    let now = UnixTime::now();

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
    let node = der(&bundle.node.cert_pem);
    client_verifier.verify_client_cert(&node, &[], now).unwrap();
    let user = issue_user(
        &bundle.org_ca_cert_pem,
        &bundle.org_ca_key_pem,
        "a",
        UserRole::Analyst,
        3,
    )
    .unwrap();
    let chain = load_certs_pem(&user.cert_chain_pem).unwrap();
    client_verifier
        .verify_client_cert(&chain[0], &chain[1..], now)
        .unwrap();

    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
    for name in ["127.0.0.1", "localhost"] {
        let sn = ServerName::try_from(name).unwrap();
        server_verifier
            .verify_server_cert(&node, &[], &sn, &[], now)
            .unwrap();
    }
    // A user certificate is not a server certificate.
    let sn = ServerName::try_from("localhost").unwrap();
    assert!(
        server_verifier
            .verify_server_cert(&chain[0], &chain[1..], &sn, &[], now)
            .is_err()
    );

    // Revoking the organisation (node + org CA) through the CRL makes
    // rustls reject both the node and its users.
    let crl_pem = ca.revoke(&ca.serials_of_org("csirt-be")).unwrap();
    let crl: CertificateRevocationListDer<'static> = rustls_pemfile::crls(&mut crl_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let revoking = WebPkiClientVerifier::builder_with_provider(roots, provider)
        .with_crls(vec![crl])
        .allow_unknown_revocation_status()
        .build()
        .unwrap();
    assert!(revoking.verify_client_cert(&node, &[], now).is_err());
    assert!(
        revoking
            .verify_client_cert(&chain[0], &chain[1..], now)
            .is_err()
    );
}

#[test]
fn one_identifier_rule_for_org_ids_in_certificates_config_and_cluster_names() {
    let long_ok = "a".repeat(64);
    let too_long = "a".repeat(65);
    for id in [
        "ab",
        "a1",
        "0-9",
        "csirt-be",
        "cert-eu",
        "a--b",
        long_ok.as_str(),
    ] {
        assert!(is_valid_id(id), "{id:?}");
        check_org_id(id).unwrap();
        crate::config::check_org(id).unwrap();
        crate::cluster::check_name(id).unwrap();
    }
    for id in [
        "",
        "a",
        "-",
        "--",
        "-csirt",
        "csirt-",
        "CSIRT-BE",
        "csirt_be",
        "csirt be",
        "csirt.be",
        "csirt/be",
        "\u{e9}t\u{e9}",
        too_long.as_str(),
    ] {
        assert!(!is_valid_id(id), "{id:?}");
        let err = check_org_id(id).unwrap_err();
        assert!(matches!(err, PkiError::Invalid(_)), "{id:?}: {err:?}");
        assert!(err.to_string().contains(&format!("{id:?}")), "{err}");
        let config_err = crate::config::check_org(id).unwrap_err();
        assert!(
            config_err.contains("not starting or ending with '-'"),
            "{config_err}"
        );
        assert!(crate::cluster::check_name(id).is_err(), "{id:?}");
    }
}

/// A node certificate the root's classical key signed is not enough: the root's ML-DSA-65
/// certification must cover this exact profile and TLS key (a quantum adversary who can
/// forge ECDSA could otherwise certify keys of its own).
#[test]
fn node_profiles_need_the_roots_post_quantum_certification() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FederationCa::generate("Root").unwrap();
    let bundle = ca.issue_org(&req("org-a")).unwrap();
    ca.save(dir.path()).unwrap();
    let root = der(ca.cert_pem());
    let legit = der(&bundle.node.cert_pem);
    assert!(identity_from_chain(std::slice::from_ref(&legit), &root).is_ok());

    // The legit certificate's profile extension and certification, byte for byte.
    let parsed = super::der::parse_cert(&legit).unwrap();
    let ext = |oid: &[u64]| {
        parsed
            .iter_extensions()
            .find(|e| e.oid.iter().is_some_and(|it| it.eq(oid.iter().copied())))
            .map(|e| rcgen::CustomExtension::from_oid_content(oid, e.value.to_vec()))
            .unwrap()
    };
    let root_key =
        KeyPair::from_pem(&fs::read_to_string(dir.path().join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_der(&root, &root_key).unwrap();
    let legit_serial = parsed.raw_serial().to_vec();
    let legit_not_after = parsed.validity().not_after.to_datetime();
    // Serial and expiry as `(serial, not_after)`; None = a fresh serial, expiry in a day.
    let forge_as = |exts: Vec<rcgen::CustomExtension>,
                    key: &KeyPair,
                    fields: Option<(&[u8], OffsetDateTime)>| {
        let mut params = base_params(OffsetDateTime::now_utc() + Duration::days(1));
        if let Some((serial, not_after)) = fields {
            params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
            params.not_after = not_after;
        }
        params.distinguished_name.push(DnType::CommonName, "org-a");
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.custom_extensions = exts;
        params.signed_by(key, &issuer).unwrap().der().clone()
    };
    let forge = |exts, key: &KeyPair| forge_as(exts, key, None);
    let id_err = |cert: CertificateDer<'static>| {
        identity_from_chain(&[cert], &root).unwrap_err().to_string()
    };

    // Keys of the adversary's choosing, classically signed by the root, no certification.
    let mut forged = profile("org-a");
    let attacker = crate::signing::SigningKey::generate("org-a").unwrap();
    forged.signing_keys = vec![CertifiedKey::new("org-a", &attacker.public_key())];
    let forged_ext = profile_extension(&CertProfile::Node(forged)).unwrap();
    let tls_key = KeyPair::generate().unwrap();
    let e = id_err(forge(vec![forged_ext.clone()], &tls_key));
    assert!(
        e.contains("no post-quantum (ML-DSA-65) certification"),
        "{e}"
    );
    // ... with the legit certificate's certification copied in.
    let e = id_err(forge(vec![forged_ext, ext(PQ_CERTIFICATION_OID)], &tls_key));
    assert!(e.contains("does not verify"), "{e}");
    // The legit profile and certification on another TLS key: the certification binds the key.
    let e = id_err(forge(
        vec![ext(PROFILE_OID), ext(PQ_CERTIFICATION_OID)],
        &tls_key,
    ));
    assert!(e.contains("does not verify"), "{e}");
    // On the legit TLS key: only with the legit serial and expiry (a revoked certificate
    // cannot come back under a new serial, nor outlive its expiry).
    let node_key = KeyPair::from_pem(&bundle.node.key_pem).unwrap();
    let same = vec![ext(PROFILE_OID), ext(PQ_CERTIFICATION_OID)];
    let reissued = forge_as(
        same.clone(),
        &node_key,
        Some((&legit_serial, legit_not_after)),
    );
    assert!(identity_from_chain(&[reissued], &root).is_ok());
    let e = id_err(forge_as(
        same.clone(),
        &node_key,
        Some((&[0x42; 16], legit_not_after)),
    ));
    assert!(e.contains("does not verify"), "{e}");
    let e = id_err(forge_as(
        same,
        &node_key,
        Some((&legit_serial, legit_not_after + Duration::days(400))),
    ));
    assert!(e.contains("does not verify"), "{e}");
    // A second certification extension is refused, not chosen between.
    let e = id_err(forge(
        vec![
            ext(PROFILE_OID),
            ext(PQ_CERTIFICATION_OID),
            ext(PQ_CERTIFICATION_OID),
        ],
        &tls_key,
    ));
    assert!(e.contains("more than once"), "{e}");

    // A root without an ML-DSA-65 key certifies nothing.
    let plain_key = KeyPair::generate().unwrap();
    let mut params = base_params(OffsetDateTime::now_utc() + Duration::days(1));
    params
        .distinguished_name
        .push(DnType::CommonName, "Plain root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
    let plain_root = params.self_signed(&plain_key).unwrap();
    let plain_issuer = Issuer::from_ca_cert_der(plain_root.der(), &plain_key).unwrap();
    let mut params = base_params(OffsetDateTime::now_utc() + Duration::days(1));
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.custom_extensions = vec![ext(PROFILE_OID), ext(PQ_CERTIFICATION_OID)];
    let leaf = params.signed_by(&tls_key, &plain_issuer).unwrap();
    let e = identity_from_chain(&[leaf.der().clone()], plain_root.der())
        .unwrap_err()
        .to_string();
    assert!(e.contains("root certificate has no ML-DSA-65 key"), "{e}");

    // The CA directory: the post-quantum key is required and must be the root's.
    let other = tempfile::tempdir().unwrap();
    FederationCa::generate("Other")
        .unwrap()
        .save(other.path())
        .unwrap();
    fs::copy(
        other.path().join("ca-ml-dsa.key"),
        dir.path().join("ca-ml-dsa.key"),
    )
    .unwrap();
    let e = FederationCa::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("mixed up"), "{e}");
    fs::remove_file(dir.path().join("ca-ml-dsa.key")).unwrap();
    let e = FederationCa::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("init-federation"), "{e}");
}

#[test]
fn a_rotation_issues_fresh_keys_for_the_same_profile_and_retires_the_old_certificate_after_the_overlap()
 {
    let mut ca = FederationCa::generate("Root").unwrap();
    let root = der(ca.cert_pem());
    let mut wanted = profile("org-a");
    wanted.functions = vec!["csirts-network".into()];
    let first = ca
        .issue_org(&OrgRequest {
            profile: wanted,
            validity_days: 365,
        })
        .unwrap();
    let old_der = der(&first.node.cert_pem);
    let old_serial = serial_hex(&old_der).unwrap();
    assert_eq!(old_serial, first.node.serial);
    let next = ca.rotate_node(&old_der, 30, 3600).unwrap();
    let new_der = der(&next.cert_pem);
    // Issued strictly after its predecessor, even within the same second: "newer" (cluster
    // logs take only a newer certificate) is never ambiguous.
    assert!(
        crate::pki::validity_ms(&new_der).unwrap().0 > crate::pki::validity_ms(&old_der).unwrap().0
    );
    // Same CA-asserted profile, every key fresh, and certified post-quantum like any node.
    let (Some(CertProfile::Node(old_p)), Some(CertProfile::Node(new_p))) = (
        cert_profile(&old_der).unwrap(),
        cert_profile(&new_der).unwrap(),
    ) else {
        panic!("not node profiles");
    };
    let strip = |p: &OrgProfile| OrgProfile {
        signing_keys: vec![],
        encryption_keys: vec![],
        ..p.clone()
    };
    assert_eq!(strip(&old_p), strip(&new_p));
    assert_eq!(new_p.signing_keys, vec![next.signing_key.clone()]);
    assert_eq!(new_p.encryption_keys, vec![next.encryption_key.clone()]);
    assert_ne!(next.signing_key.key_id, first.node.signing_key.key_id);
    assert_ne!(next.encryption_key.key_id, first.node.encryption_key.key_id);
    assert_ne!(next.key_pem, first.node.key_pem);
    let chain = [new_der.clone()];
    assert!(matches!(
        identity_from_chain(&chain, &root),
        Ok(PeerIdentity::Node { .. })
    ));
    let key =
        crate::signing::SigningKey::from_pkcs8_pem("org-a", &next.signing_key_pkcs8_pem).unwrap();
    assert_eq!(key.key_id(), next.signing_key.key_id);
    let enc = crate::e2e::RecipientKey::from_pem("org-a", &next.encryption_key_pem).unwrap();
    assert_eq!(enc.key_id(), next.encryption_key.key_id);
    // The index: the old one superseded, retiring in an hour; not on the CRL yet.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let row = ca
        .issued()
        .into_iter()
        .find(|c| c.serial == old_serial)
        .unwrap();
    assert_eq!(row.superseded_by.as_deref(), Some(next.serial.as_str()));
    assert!((now + 3590..=now + 3600).contains(&row.retires_at.unwrap()));
    assert!(row.revoked_at.is_none());
    assert!(
        !crl_serials(ca.crl_pem(), &root)
            .unwrap()
            .contains(&old_serial)
    );
    // Rotating the old one again, another CA's certificate, a user or CA certificate, an
    // overlap out of range: refused, saying why.
    let e = ca.rotate_node(&old_der, 30, 0).unwrap_err().to_string();
    assert!(e.contains("already rotated"), "{e}");
    let other = FederationCa::generate("Root").unwrap();
    let foreign = der(&other.issue_org(&req("org-a")).unwrap().node.cert_pem);
    let e = ca.rotate_node(&foreign, 30, 0).unwrap_err().to_string();
    assert!(
        e.contains("not a node certificate of this federation CA"),
        "{e}"
    );
    // A certificate this CA issued to another organisation, or a copy of a real serial on
    // a certificate the root did not sign: neither names what may be rotated.
    let b = ca.issue_org(&req("org-b")).unwrap();
    let forged = {
        let key = KeyPair::generate().unwrap();
        let mut p = base_params(OffsetDateTime::now_utc() + Duration::days(30));
        p.serial_number = Some(rcgen::SerialNumber::from_slice(
            &hex::decode(&b.node.serial).unwrap(),
        ));
        p.custom_extensions
            .push(profile_extension(&CertProfile::Node(profile("org-b"))).unwrap());
        CertificateDer::from(p.self_signed(&key).unwrap().der().to_vec())
    };
    let e = ca.rotate_node(&forged, 30, 0).unwrap_err().to_string();
    assert!(
        e.contains("not a node certificate of this federation CA"),
        "{e}"
    );
    let e = ca
        .rotate_node(&der(&first.org_ca_cert_pem), 30, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a node certificate"), "{e}");
    for bad in [-1, MAX_OVERLAP_SECS + 1] {
        let e = ca.rotate_node(&new_der, 30, bad).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
    }
    ca.revoke(std::slice::from_ref(&b.node.serial)).unwrap();
    let e = ca
        .rotate_node(&der(&b.node.cert_pem), 30, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is revoked"), "{e}");
    // With no overlap, the CRL lists the old one at once, reason superseded, distrusted
    // from its retirement (not from any earlier time: what it signed before stays good).
    let third = ca.rotate_node(&new_der, 30, 0).unwrap();
    let info = parse_crl(ca.crl_pem(), &root).unwrap();
    let new_serial = serial_hex(&new_der).unwrap();
    assert!(info.serials.contains(&new_serial));
    assert!(!info.serials.contains(&third.serial));
    assert!(
        !info.serials.contains(&old_serial),
        "its overlap has not ended"
    );
    let since: std::collections::HashMap<_, _> = info.distrusted_since.into_iter().collect();
    assert!((now * 1000 - 5_000..=now * 1000 + 5_000).contains(&since[&new_serial]));
}

#[test]
fn the_crl_lists_a_superseded_certificate_from_its_retirement_and_a_revocation_first() {
    use super::ca::crl_entry;
    let row = IssuedCert {
        serial: "01".into(),
        org: "org-a".into(),
        kind: IssuedKind::Node,
        not_after: String::new(),
        revoked_at: None,
        compromised_since: None,
        superseded_by: Some("02".into()),
        retires_at: Some(1_000),
    };
    assert_eq!(crl_entry(&row, 999), None);
    assert_eq!(
        crl_entry(&row, 1_000),
        Some((1_000, Some(rcgen::RevocationReason::Superseded)))
    );
    let revoked = IssuedCert {
        revoked_at: Some(500),
        ..row.clone()
    };
    assert_eq!(crl_entry(&revoked, 10), Some((500, None)));
    let compromised = IssuedCert {
        compromised_since: Some(400),
        ..revoked
    };
    assert_eq!(
        crl_entry(&compromised, 10),
        Some((500, Some(rcgen::RevocationReason::KeyCompromise)))
    );
    let plain = IssuedCert {
        superseded_by: None,
        retires_at: None,
        ..row
    };
    assert_eq!(crl_entry(&plain, i64::MAX), None);
}

#[test]
fn an_installed_rotation_keeps_the_old_certificate_and_encryption_key_under_retired() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = FederationCa::generate("Root").unwrap();
    let first = ca.issue_org(&req("org-a")).unwrap();
    first.save(dir.path()).unwrap();
    let next = ca.rotate_node(&der(&first.node.cert_pem), 30, 60).unwrap();
    let staging = next.stage(dir.path()).unwrap();
    assert_eq!(staging, staging_dir(dir.path(), &next.serial));
    let read = |p: std::path::PathBuf| fs::read_to_string(p).unwrap();
    // Staged only: the current files are untouched.
    assert_eq!(read(dir.path().join("node.crt")), first.node.cert_pem);
    let retired = install_staged(dir.path(), &next.serial, &first.node.serial).unwrap();
    assert_eq!(
        retired,
        dir.path().join(RETIRED_DIR).join(&first.node.serial)
    );
    assert_eq!(read(dir.path().join("node.crt")), next.cert_pem);
    assert_eq!(read(dir.path().join("node.key")), next.key_pem);
    assert_eq!(
        read(dir.path().join("signing.key")),
        next.signing_key_pkcs8_pem
    );
    assert_eq!(
        read(dir.path().join("encryption.key")),
        next.encryption_key_pem
    );
    // What the node needs to open what was encrypted to the old key; not the old private
    // TLS and signing keys.
    assert_eq!(read(retired.join("node.crt")), first.node.cert_pem);
    assert_eq!(
        read(retired.join("encryption.key")),
        first.node.encryption_key_pem
    );
    assert!(!retired.join("signing.key").exists() && !retired.join("node.key").exists());
    // The organisation CA stays; nothing is left staged.
    assert_eq!(read(dir.path().join("org-ca.crt")), first.org_ca_cert_pem);
    assert!(!staging.exists());
    // Keys stay owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: std::path::PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for f in ["node.key", "signing.key", "encryption.key"] {
        assert_eq!(mode(dir.path().join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(retired.join("encryption.key")), 0o600);
    // Run again: nothing changes (already installed).
    install_staged(dir.path(), &next.serial, &first.node.serial).unwrap();
    assert_eq!(read(dir.path().join("node.crt")), next.cert_pem);
    assert_eq!(
        read(retired.join("encryption.key")),
        first.node.encryption_key_pem
    );
}

#[test]
fn an_interrupted_installation_finishes_when_run_again_and_keeps_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = FederationCa::generate("Root").unwrap();
    let first = ca.issue_org(&req("org-a")).unwrap();
    first.save(dir.path()).unwrap();
    let next = ca.rotate_node(&der(&first.node.cert_pem), 30, 60).unwrap();
    let staging = next.stage(dir.path()).unwrap();
    // Interrupted after the old files were kept and the new encryption key was moved in,
    // before node.crt: the retired copy must stay the old key.
    let retired = dir.path().join(RETIRED_DIR).join(&first.node.serial);
    fs::create_dir_all(&retired).unwrap();
    for f in ["node.crt", "encryption.key"] {
        fs::copy(dir.path().join(f), retired.join(f)).unwrap();
    }
    fs::rename(
        staging.join("encryption.key"),
        dir.path().join("encryption.key"),
    )
    .unwrap();
    install_staged(dir.path(), &next.serial, &first.node.serial).unwrap();
    let read = |p: std::path::PathBuf| fs::read_to_string(p).unwrap();
    assert_eq!(read(dir.path().join("node.crt")), next.cert_pem);
    assert_eq!(
        read(dir.path().join("encryption.key")),
        next.encryption_key_pem
    );
    assert_eq!(
        read(retired.join("encryption.key")),
        first.node.encryption_key_pem
    );
    // Nothing staged for a serial: said so.
    let e = install_staged(dir.path(), "00ff", &next.serial)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing staged"), "{e}");
}

#[test]
fn a_rotation_survives_save_and_load_and_the_crl_lists_it_once_it_retires() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = FederationCa::generate("Root").unwrap();
    let root = der(ca.cert_pem());
    let first = ca.issue_org(&req("org-a")).unwrap();
    ca.rotate_node(&der(&first.node.cert_pem), 30, 1).unwrap();
    ca.save(dir.path()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut loaded = FederationCa::load(dir.path()).unwrap();
    let row = loaded
        .issued()
        .into_iter()
        .find(|c| c.serial == first.node.serial)
        .unwrap();
    assert!(row.retires_at.is_some(), "{row:?}");
    let crl = loaded.refresh_crl().unwrap();
    assert!(
        crl_serials(&crl, &root)
            .unwrap()
            .contains(&first.node.serial)
    );
}
