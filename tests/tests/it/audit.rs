//! The audit trail verifies after traffic, and an edited or deleted record
//! is found (Admin.AuditVerify names the first bad seq; an export verifies
//! offline and an edited exported record does not).

use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, audit_export, audit_verify};

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_trail_verifies_and_tampering_is_detected() {
    let fed = TestFederation::new(&[OrgSpec::csirt(BE, "BE"), OrgSpec::csirt(FR, "FR")]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(fed.publish(BE, &format!("audited {i}")).await.id);
    }
    // Wait for the trail to settle: every message delivered and acknowledged,
    // and no record added since the previous poll (the checks below compare
    // counts read at different times).
    let mut seen = None;
    assert_eventually!(
        {
            let recs = audit_export(&fed, BE).await;
            let delivered = ids.iter().all(|id| {
                recs.iter()
                    .any(|r| r.event == "delivered" && &r.msg_id == id)
            });
            let unchanged = seen.replace(recs.len()) == Some(recs.len());
            delivered && unchanged
        },
        "csirt-be's trail never settled with the three deliveries ({seen:?} records)"
    );

    let v = audit_verify(&fed, BE).await;
    let records = audit_export(&fed, BE).await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, records.len() as u64, "{v:?}");
    assert!(
        v.records >= 6,
        "published + delivered for 3 messages: {v:?}"
    );
    assert_eq!(v.head_hash, records.last().unwrap().hash);
    for id in &ids {
        assert!(
            records
                .iter()
                .any(|r| r.event == "published" && &r.msg_id == id)
        );
    }

    // Offline verification of the export, and of an edited copy.
    bluewire_node::audit::verify_records(&records).expect("the export verifies");
    let mid = records.len() / 2;
    let mut edited = records.clone();
    edited[mid].detail.push_str(" (edited)");
    let (seq, why) = bluewire_node::audit::verify_records(&edited)
        .expect_err("an edited export must not verify");
    assert_eq!(seq, edited[mid].seq, "{why}");
    let mut cut = records.clone();
    cut.remove(mid);
    let (seq, why) = bluewire_node::audit::verify_records(&cut).expect_err("a gap must not verify");
    assert_eq!(seq, records[mid + 1].seq, "{why}");
    // A round trip through the JSON export format keeps it verifiable.
    let json: Vec<_> = records
        .iter()
        .map(|r| {
            bluewire_node::audit::record_from_json(&bluewire_node::audit::record_to_json(r))
                .unwrap()
        })
        .collect();
    bluewire_node::audit::verify_records(&json).expect("JSON round trip verifies");

    // Edit a stored record in place (its hash left as it was).
    let store = fed.node(BE).store.clone();
    let rows = store.audit_records(0, 10_000).expect("read audit records");
    let victim = rows[rows.len() / 2].clone();
    let original = bluewire_node::store::encode_audit_row(&victim);
    let mut forged = victim.clone();
    forged.detail = "nothing to see here".into();
    store
        .tamper_audit_for_tests(
            victim.seq,
            Some(bluewire_node::store::encode_audit_row(&forged)),
        )
        .await
        .expect("tamper");
    let v = audit_verify(&fed, BE).await;
    assert!(!v.ok, "edited record not detected: {v:?}");
    assert_eq!(v.first_bad_seq, victim.seq, "{v:?}");
    assert!(v.problem.contains("edited"), "{v:?}");
    let exported = audit_export(&fed, BE).await;
    let (seq, _) =
        bluewire_node::audit::verify_records(&exported).expect_err("export of an edited log");
    assert_eq!(seq, victim.seq);

    // Put it back: the chain verifies again.
    store
        .tamper_audit_for_tests(victim.seq, Some(original))
        .await
        .expect("restore");
    let v = audit_verify(&fed, BE).await;
    assert!(v.ok, "{v:?}");

    // Delete a record.
    let gone = rows[1].seq;
    store
        .tamper_audit_for_tests(gone, None)
        .await
        .expect("delete");
    let v = audit_verify(&fed, BE).await;
    assert!(!v.ok, "deleted record not detected: {v:?}");
    assert_eq!(v.first_bad_seq, gone, "{v:?}");
    assert!(
        v.problem.contains("missing") || v.problem.contains("removed"),
        "{v:?}"
    );
    assert_eq!(v.records, rows.len() as u64 - 1, "{v:?}");

    // Delete the newest record (truncation).
    let store_fr = fed.node(FR).store.clone();
    let rows_fr = store_fr.audit_records(0, 10_000).unwrap();
    let last = rows_fr.last().expect("csirt-fr audited something").seq;
    assert!(audit_verify(&fed, FR).await.ok);
    store_fr.tamper_audit_for_tests(last, None).await.unwrap();
    let v = audit_verify(&fed, FR).await;
    assert!(
        !v.ok && v.first_bad_seq == last,
        "truncation not detected: {v:?}"
    );
}
