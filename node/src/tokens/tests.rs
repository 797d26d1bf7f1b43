//! Unit tests of API tokens: the format and the check as pure functions, then the service
//! through a real store in a temporary directory.

use super::*;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 24 * 60 * 60 * 1000;

fn record(secret: &str) -> TokenRecord {
    TokenRecord {
        id: "0123456789abcdef".into(),
        user: "siem".into(),
        role: UserRole::SocTool,
        label: "SIEM connector".into(),
        created_ms: NOW,
        expires_ms: NOW + DAY,
        revoked_ms: 0,
        hash: hash_secret(secret),
        created_by: "olga".into(),
    }
}

fn open_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn parse_splits_a_well_formed_token() {
    let token = format!("bwt_0123456789abcdef_{SECRET}");
    assert_eq!(parse(&token).unwrap(), ("0123456789abcdef", SECRET));
    // Header values may carry surrounding whitespace.
    assert_eq!(
        parse(&format!("  {token}\r\n")).unwrap(),
        ("0123456789abcdef", SECRET)
    );
}

#[test]
fn parse_refuses_malformed_tokens_without_repeating_them() {
    let good_id = "0123456789abcdef";
    let cases = [
        String::new(),
        SECRET.to_string(),
        format!("bwx_{good_id}_{SECRET}"),
        format!("BWT_{good_id}_{SECRET}"),
        format!("bwt_{good_id}{SECRET}"),
        format!("bwt_{good_id}_"),
        format!("bwt_0123456789abcde_{SECRET}"),
        format!("bwt_0123456789abcdeg_{SECRET}"),
        format!("bwt_0123456789ABCDEF_{SECRET}"),
        format!("bwt_{good_id}_{}", &SECRET[1..]),
        format!("bwt_{good_id}_{SECRET}0"),
        format!("bwt_{good_id}_{}", SECRET.to_uppercase()),
        format!("bwt_{good_id}_{SECRET}_extra"),
        format!("bwt_{good_id}_{}", "z".repeat(64)),
    ];
    for presented in cases {
        let e = parse(&presented).expect_err(&format!("{presented:?} must be refused"));
        assert!(matches!(e, TokenError::Malformed(_)), "{presented:?}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("bwt_<16 hex characters>_<64 hex characters>"));
        assert!(!msg.contains(SECRET), "message repeats the secret: {msg}");
    }
}

#[test]
fn check_accepts_the_right_secret_until_expiry() {
    let r = record(SECRET);
    check(&r, SECRET, NOW).unwrap();
    check(&r, SECRET, NOW + DAY - 1).unwrap();
}

#[test]
fn check_refuses_a_wrong_secret() {
    let r = record(SECRET);
    let mut other = SECRET.to_string();
    other.replace_range(63.., "0");
    for wrong in [other.as_str(), "", &SECRET[..63]] {
        let e = check(&r, wrong, NOW).unwrap_err();
        assert!(matches!(e, TokenError::WrongSecret(ref id) if id == "0123456789abcdef"));
        assert!(!e.to_string().contains(SECRET));
    }
}

#[test]
fn check_refuses_an_expired_token_saying_when_and_what_to_do() {
    let r = record(SECRET);
    let e = check(&r, SECRET, NOW + DAY).unwrap_err();
    assert!(matches!(e, TokenError::Expired { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("2027-01-16T08:00:00Z"), "{msg}");
    assert!(msg.contains("bluewire token create"), "{msg}");
    assert!(!msg.contains(SECRET));
}

#[test]
fn check_refuses_a_revoked_token_even_before_expiry() {
    let mut r = record(SECRET);
    r.revoked_ms = NOW + 1000;
    let e = check(&r, SECRET, NOW + 2000).unwrap_err();
    assert!(matches!(e, TokenError::Revoked { .. }), "{e}");
    assert!(e.to_string().contains("revoked at 2027-01-15T08:00:01Z"));
}

#[test]
fn check_tells_revocation_only_to_the_holder_of_the_secret() {
    let mut r = record(SECRET);
    r.revoked_ms = NOW;
    assert!(matches!(
        check(&r, &"0".repeat(64), NOW + DAY * 2).unwrap_err(),
        TokenError::WrongSecret(_)
    ));
}

#[test]
fn ttl_bounds_are_one_hour_to_four_hundred_days() {
    check_ttl(60 * 60 * 1000).unwrap();
    check_ttl(400 * DAY).unwrap();
    check_ttl(DEFAULT_TTL_MS).unwrap();
    for bad in [0, -DAY, 60 * 60 * 1000 - 1, 400 * DAY + 1, 401 * DAY] {
        let e = check_ttl(bad).unwrap_err();
        assert!(matches!(e, TokenError::Invalid(_)));
        assert!(e.to_string().contains("between 1 hour and 400 days"), "{e}");
    }
    assert!(
        check_ttl(30 * 60 * 1000)
            .unwrap_err()
            .to_string()
            .contains("30m")
    );
    assert!(
        check_ttl(401 * DAY)
            .unwrap_err()
            .to_string()
            .contains("401d")
    );
}

#[tokio::test]
async fn create_stores_only_the_hash_and_authenticate_finds_the_caller() {
    let (_dir, store) = open_store();
    let (rec, token) = create(
        &store,
        "siem",
        UserRole::SocTool,
        "Splunk",
        90 * DAY,
        "olga",
        NOW,
    )
    .await
    .unwrap();
    let (id, secret) = parse(&token).unwrap();
    assert_eq!(id, rec.id);
    assert_ne!(hex::encode(rec.hash), secret);
    assert_ne!(rec.hash.as_slice(), secret.as_bytes());
    assert_eq!(rec.hash, hash_secret(secret));
    assert_eq!(rec.expires_ms, NOW + 90 * DAY);
    assert_eq!((rec.created_ms, rec.revoked_ms), (NOW, 0));
    assert_eq!(rec.created_by, "olga");

    // Nothing stored holds the secret.
    let stored = store.api_token(id).unwrap().unwrap();
    assert_eq!(stored.hash, rec.hash.to_vec());
    let bytes = prost::Message::encode_to_vec(&stored);
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));

    let caller = authenticate(&store, &token, NOW + DAY).unwrap();
    assert_eq!(
        caller,
        TokenCaller {
            user: "siem".into(),
            role: UserRole::SocTool,
            token_id: rec.id.clone(),
        }
    );

    // The same id with another secret, an unknown id, and after expiry.
    let forged = format!("bwt_{id}_{}", "0".repeat(64));
    assert!(matches!(
        authenticate(&store, &forged, NOW).unwrap_err(),
        TokenError::WrongSecret(_)
    ));
    let unknown = format!("bwt_ffffffffffffffff_{secret}");
    let e = authenticate(&store, &unknown, NOW).unwrap_err();
    assert!(matches!(e, TokenError::Unknown(ref u) if u == "ffffffffffffffff"));
    assert!(!e.to_string().contains(secret));
    assert!(matches!(
        authenticate(&store, &token, NOW + 90 * DAY).unwrap_err(),
        TokenError::Expired { .. }
    ));
    assert!(matches!(
        authenticate(&store, "Bearer nothing", NOW).unwrap_err(),
        TokenError::Malformed(_)
    ));
}

#[tokio::test]
async fn tokens_are_unique_and_listed_oldest_first() {
    let (_dir, store) = open_store();
    assert!(list(&store).unwrap().is_empty());
    let (b, tb) = create(&store, "bob", UserRole::Analyst, "", DAY, "olga", NOW + 5)
        .await
        .unwrap();
    let (a, ta) = create(&store, "alice", UserRole::Operator, "x", DAY, "olga", NOW)
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_ne!(ta, tb);
    assert_eq!(list(&store).unwrap(), vec![a, b]);
}

#[tokio::test]
async fn revoke_refuses_the_token_from_then_on_and_is_listed() {
    let (_dir, store) = open_store();
    let (rec, token) = create(&store, "misp", UserRole::SocTool, "", DAY, "olga", NOW)
        .await
        .unwrap();
    authenticate(&store, &token, NOW + 10).unwrap();

    let revoked = revoke(&store, &rec.id, "olga", NOW + 20).await.unwrap();
    assert_eq!(revoked.revoked_ms, NOW + 20);
    assert_eq!(
        TokenRecord {
            revoked_ms: 0,
            ..revoked.clone()
        },
        rec
    );
    let e = authenticate(&store, &token, NOW + 30).unwrap_err();
    assert!(matches!(e, TokenError::Revoked { .. }), "{e}");
    assert_eq!(list(&store).unwrap(), vec![revoked.clone()]);

    // Again: nothing changes, the first revocation time stands.
    let again = revoke(&store, &rec.id, "olga", NOW + 40).await.unwrap();
    assert_eq!(again, revoked);
}

#[tokio::test]
async fn revoke_names_unknown_and_invalid_ids() {
    let (_dir, store) = open_store();
    let e = revoke(&store, "0123456789abcdef", "olga", NOW)
        .await
        .unwrap_err();
    assert!(matches!(e, TokenError::Unknown(_)));
    assert!(e.to_string().contains("0123456789abcdef"));
    assert!(e.to_string().contains("bluewire token list"));

    // A whole token pasted as an id is refused without being repeated.
    let (_, token) = create(&store, "misp", UserRole::SocTool, "", DAY, "olga", NOW)
        .await
        .unwrap();
    let e = revoke(&store, &token, "olga", NOW).await.unwrap_err();
    assert!(matches!(e, TokenError::InvalidId));
    assert!(!e.to_string().contains(parse(&token).unwrap().1));
}

#[tokio::test]
async fn create_refuses_bad_users_labels_and_lifetimes_and_stores_nothing() {
    let (_dir, store) = open_store();
    let bad = [
        ("", "", DAY),
        (" alice", "", DAY),
        ("al\nice", "", DAY),
        ("alice", "two\nlines", DAY),
        ("alice", &"x".repeat(MAX_LABEL_LEN + 1), DAY),
        ("alice", "", 59 * 60 * 1000),
        ("alice", "", 400 * DAY + 1),
    ];
    for (user, label, ttl) in bad {
        let e = create(&store, user, UserRole::Analyst, label, ttl, "olga", NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(e, TokenError::Invalid(_)),
            "{user:?} {label:?}: {e}"
        );
    }
    assert!(list(&store).unwrap().is_empty());
}

#[tokio::test]
async fn create_and_revoke_are_audited_without_the_secret() {
    let (_dir, store) = open_store();
    let (rec, token) = create(&store, "siem", UserRole::SocTool, "", DAY, "olga", NOW)
        .await
        .unwrap();
    revoke(&store, &rec.id, "ivan", NOW + 1).await.unwrap();
    revoke(&store, &rec.id, "ivan", NOW + 2).await.unwrap();
    let records = store.audit_records(0, 10).unwrap();
    let tokens: Vec<_> = records.iter().filter(|r| r.event == "token").collect();
    assert_eq!(tokens.len(), 2, "{records:?}");
    assert_eq!((tokens[0].at_ms, tokens[1].at_ms), (NOW, NOW + 1));
    let created = &tokens[0].detail;
    assert!(
        created.starts_with(&format!("created id={}", rec.id)),
        "{created}"
    );
    for part in [
        "user=\"siem\"",
        "role=soc-tool",
        "by=\"olga\"",
        "expires=2027-01-16",
    ] {
        assert!(created.contains(part), "{created} lacks {part}");
    }
    assert!(
        tokens[1]
            .detail
            .starts_with(&format!("revoked id={}", rec.id))
    );
    assert!(tokens[1].detail.contains("by=\"ivan\""));
    let secret = parse(&token).unwrap().1;
    assert!(records.iter().all(|r| !r.detail.contains(secret)));
    assert!(store.verify_audit().unwrap().ok);
}

#[tokio::test]
async fn a_stored_record_that_cannot_be_read_is_corrupt_not_a_panic() {
    let (_dir, store) = open_store();
    let bad = ApiTokenRecord {
        id: "00000000000000aa".into(),
        role: "admin".into(),
        hash: vec![0; 32],
        expires_ms: NOW + DAY,
        ..Default::default()
    };
    store.put_api_token(bad, Vec::new()).await.unwrap();
    let e = authenticate(&store, &format!("bwt_00000000000000aa_{SECRET}"), NOW).unwrap_err();
    assert!(matches!(e, TokenError::Corrupt { .. }), "{e}");
    assert!(matches!(
        list(&store).unwrap_err(),
        TokenError::Corrupt { .. }
    ));
}

#[tokio::test]
async fn a_reused_id_is_refused_by_the_store() {
    let (_dir, store) = open_store();
    let (rec, _) = create(&store, "siem", UserRole::SocTool, "", DAY, "olga", NOW)
        .await
        .unwrap();
    let mut again = rec.to_stored();
    again.user = "mallory".into();
    let e = store.put_api_token(again, Vec::new()).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    assert_eq!(list(&store).unwrap()[0].user, "siem");
}
