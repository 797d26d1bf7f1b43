//! The closed vocabularies incident reports are classified with: the ENISA / TF-CSIRT
//! Reference Security Incident Taxonomy (RSIT, as MISP's `rsit` taxonomy spells it) and the
//! NIS2 sectors (Directive (EU) 2022/2555, Annexes I and II). Pure data and lookups; the
//! blueprint (II.10–11) asks for a common taxonomy so that reports compare across borders.

/// RSIT classes and their types.
pub const RSIT: &[(&str, &[&str])] = &[
    ("abusive-content", &["spam", "harmful-speech", "violence"]),
    (
        "malicious-code",
        &[
            "infected-system",
            "c2-server",
            "malware-distribution",
            "malware-configuration",
        ],
    ),
    (
        "information-gathering",
        &["scanner", "sniffing", "social-engineering"],
    ),
    (
        "intrusion-attempts",
        &["ids-alert", "brute-force", "exploit"],
    ),
    (
        "intrusions",
        &[
            "privileged-account-compromise",
            "unprivileged-account-compromise",
            "application-compromise",
            "system-compromise",
            "burglary",
        ],
    ),
    (
        "availability",
        &["dos", "ddos", "misconfiguration", "sabotage", "outage"],
    ),
    (
        "information-content-security",
        &[
            "unauthorised-information-access",
            "unauthorised-information-modification",
            "data-loss",
            "data-leak",
        ],
    ),
    (
        "fraud",
        &[
            "unauthorised-use-of-resources",
            "copyright",
            "masquerade",
            "phishing",
        ],
    ),
    (
        "vulnerable",
        &[
            "weak-crypto",
            "ddos-amplifier",
            "potentially-unwanted-accessible",
            "information-disclosure",
            "vulnerable-system",
        ],
    ),
    ("other", &["other", "undetermined"]),
    ("test", &["test"]),
];

/// NIS2 sector codes: Annex I (sectors of high criticality) and Annex II (other critical
/// sectors), with the Annex I subsectors.
pub const NIS2_SECTORS: &[&str] = &[
    "energy",
    "energy-electricity",
    "energy-district-heating-cooling",
    "energy-oil",
    "energy-gas",
    "energy-hydrogen",
    "transport",
    "transport-air",
    "transport-rail",
    "transport-water",
    "transport-road",
    "banking",
    "financial-market-infrastructures",
    "health",
    "drinking-water",
    "waste-water",
    "digital-infrastructure",
    "ict-service-management",
    "public-administration",
    "space",
    "postal-courier",
    "waste-management",
    "chemicals",
    "food",
    "manufacturing",
    "digital-providers",
    "research",
];

/// Is `class`/`type` an RSIT classification? Either both empty (unclassified) or a known
/// pair; the refusal lists what is allowed.
pub fn check_rsit(class: &str, ty: &str) -> Result<(), String> {
    if class.is_empty() && ty.is_empty() {
        return Ok(());
    }
    let Some((_, types)) = RSIT.iter().find(|(c, _)| *c == class) else {
        return Err(format!(
            "taxonomy_class {class:?} is not an ENISA RSIT class; one of: {}",
            RSIT.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
        ));
    };
    if !types.contains(&ty) {
        return Err(format!(
            "taxonomy_type {ty:?} is not a type of RSIT class {class}; one of: {}",
            types.join(", ")
        ));
    }
    Ok(())
}

/// Are these NIS2 sector codes?
pub fn check_nis2_sectors(sectors: &[String]) -> Result<(), String> {
    for s in sectors {
        if !NIS2_SECTORS.contains(&s.as_str()) {
            return Err(format!(
                "nis2_sectors: {s:?} is not a NIS2 sector code; one of: {}",
                NIS2_SECTORS.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsit_pairs_and_nis2_codes() {
        assert_eq!(check_rsit("", ""), Ok(()));
        assert_eq!(check_rsit("intrusions", "system-compromise"), Ok(()));
        assert_eq!(check_rsit("availability", "ddos"), Ok(()));
        let e = check_rsit("intrusions", "ddos").unwrap_err();
        assert!(
            e.contains("not a type of RSIT class intrusions") && e.contains("burglary"),
            "{e}"
        );
        let e = check_rsit("ransomware", "x").unwrap_err();
        assert!(
            e.contains("not an ENISA RSIT class") && e.contains("malicious-code"),
            "{e}"
        );
        assert!(check_rsit("", "ddos").is_err());
        assert_eq!(
            check_nis2_sectors(&["health".into(), "energy-gas".into()]),
            Ok(())
        );
        assert!(
            check_nis2_sectors(&["hospitals".into()])
                .unwrap_err()
                .contains("health")
        );
    }
}
