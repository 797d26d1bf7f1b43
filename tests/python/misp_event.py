"""MISP test data made with PyMISP, and MISP's own reading of it, for tests/tests/it/misp.rs.

  misp_event.py build OUTDIR
      OUTDIR/event.json      one MISP event (MISPEvent, add_attribute, add_object/MISPObject,
                             add_tag, add_galaxy/add_galaxy_cluster, add_reference), as MISP's
                             REST API writes it ({"Event": {...}}, timestamps kept)
      OUTDIR/misp-stix.json  what misp-stix (MISPtoSTIX21Parser) makes of event.json
      OUTDIR/feed/           a MISP feed of two events, written the way PyMISP's feed
                             generator writes one (to_feed(with_meta=True)): manifest.json,
                             hashes.csv, UUID.json per event
  misp_event.py read DIR
      Loads every event DIR/manifest.json lists with MISPEvent().load_file and prints, as
      JSON, what PyMISP read: [{uuid, info, tags, attributes: [{type, value, to_ids,
      category, tags}]}]. Exits non-zero on any load error.
"""

import json
import os
import sys

from misp_stix_converter import MISPtoSTIX21Parser
from pymisp import MISPEvent, MISPObject, MISPOrganisation

T = 1796025600  # 2026-11-30T08:00:00Z
EVENT = "5e7b0c1a-2b3c-4d5e-8f9a-0b1c2d3e4f50"


def uid(prefix, n):
    return f"5e7b0c1a-2b3c-4d5e-8f9a-{prefix}{n:011d}"


def org():
    o = MISPOrganisation()
    o.name = "CIRCL-test"
    o.uuid = "5e7b0c1a-2b3c-4d5e-8f9a-0000000000ff"
    return o


# (type, value, to_ids) of single attributes: every type docs/MISP.md maps, some twice
# (to_ids and not), and some it does not (reported as skipped).
ATTRIBUTES = [
    ("ip-src", "198.51.100.7", True),
    ("ip-dst", "203.0.113.9", True),
    ("ip-dst", "2001:db8::9", True),
    ("ip-src|port", "198.51.100.8|8080", True),
    ("ip-dst|port", "203.0.113.10|443", True),
    ("domain", "evil.example", True),
    ("hostname", "c2.evil.example", True),
    ("domain|ip", "evil.example|198.51.100.9", True),
    ("url", "https://evil.example/gate.php?id=1", True),
    ("uri", "/gate.php", True),
    ("email", "bad@evil.example", True),
    ("email-src", "phish@evil.example", True),
    ("email-dst", "victim@hospital.example", True),
    ("email-subject", "Invoice 'overdue' \\ urgent", True),
    ("md5", "d41d8cd98f00b204e9800998ecf8427e", True),
    ("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709", True),
    ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", True),
    ("sha512", "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
               "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e", True),
    ("filename", "invoice.pdf.exe", True),
    ("filename|md5", "a.exe|0cc175b9c0f1b6a831c399e269772661", True),
    ("filename|sha1", "b.exe|86f7e437faa5a7fce15d1ddcb9eaeaea377667b8", True),
    ("filename|sha256", "c.exe|ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb", True),
    ("mutex", "Global\\LockBit3", True),
    ("regkey", "HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\evil", True),
    ("AS", "AS64496", True),
    ("user-agent", "Mozilla/5.0 (LockBit)", True),
    ("x509-fingerprint-sha1", "9dd2b4a2ad1c1a4c5e8f0b3f6e9a2b1c0d4e5f60", True),
    ("vulnerability", "CVE-2021-44228", True),
    # Not for detection: observed-data.
    ("ip-dst", "192.0.2.1", False),
    ("ip-src|port", "192.0.2.2|4444", False),
    ("domain", "benign.example", False),
    ("domain|ip", "cdn.example|192.0.2.3", False),
    ("url", "http://benign.example/a", False),
    ("email-src", "sender@benign.example", False),
    ("email-dst", "rcpt@benign.example", False),
    ("email-subject", "Quarterly report", False),
    ("md5", "900150983cd24fb0d6963f7d28e17f72", False),
    ("filename|sha256", "d.exe|ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", False),
    ("mutex", "Local\\benign", False),
    ("regkey", "HKCU\\Software\\benign", False),
    ("AS", "AS64497", False),
    ("x509-fingerprint-sha1", "0123456789abcdef0123456789abcdef01234567", False),
    # No STIX mapping: reported as skipped.
    ("ja3-fingerprint-md5", "e7d705a3286e19ea42f587b344ee6865", True),
    ("btc", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", True),
    ("text", "Seen in two hospitals", False),
]

# Attributes whose index gets something extra.
STRICT_ATTRIBUTE = 1  # ip-dst 203.0.113.9: tagged tlp:amber, stricter than the event
GALAXY_ATTRIBUTE = 5  # domain evil.example: an attribute-level malware galaxy
ORG_ONLY = len(ATTRIBUTES)  # one more, distribution 0: skipped


def build_event():
    e = MISPEvent()
    e.uuid = EVENT
    e.info = "LockBit affiliate against hospitals"
    e.date = "2026-11-30"
    e.timestamp = T
    e.publish_timestamp = T + 60
    e.published = True
    e.distribution = 3
    e.threat_level_id = 1
    e.analysis = 1
    e.Orgc = org()
    e.add_tag("tlp:green")
    e.add_tag('rsit:malicious-code="ransomware"')
    e.add_tag("bluewire-test")
    for i, (t, v, ids) in enumerate(ATTRIBUTES):
        a = e.add_attribute(t, v, to_ids=ids, comment=f"attribute {i}")
        a.uuid = uid("1", i)
        a.timestamp = T + i
        a.distribution = 5
        if i == STRICT_ATTRIBUTE:
            a.add_tag("tlp:amber")
        if i == GALAXY_ATTRIBUTE:
            g = a.add_galaxy(type="mitre-malware", name="Malware",
                             uuid="d752161c-78f6-11e7-a0ea-bfa79b407ce4")
            g.add_galaxy_cluster(type="mitre-malware", value="LockBit 3.0 - S1202",
                                 uuid="6b8a1c5e-4f1d-4d9b-9e0a-1a2b3c4d5e6f",
                                 tag_name='misp-galaxy:mitre-malware="LockBit 3.0 - S1202"',
                                 description="LockBit 3.0 ransomware", meta={})
    hidden = e.add_attribute("ip-dst", "10.66.0.1", to_ids=True, comment="internal")
    hidden.uuid = uid("1", ORG_ONLY)
    hidden.timestamp = T
    hidden.distribution = 0

    f = MISPObject("file")
    f.uuid = uid("2", 0)
    f.timestamp = T + 100
    f.add_attribute("filename", value="dropper.exe", to_ids=False)
    f.add_attribute("md5", value="c3fcd3d76192e4007dfb496cca67e13b", to_ids=True)
    f.add_attribute("sha256", value="f7846f55cf23e14eebeab5b4e1550cad5b509e3348fbc4efa3a1413d393cb650", to_ids=True)
    f.add_attribute("size-in-bytes", value="73802", to_ids=False)
    f.add_attribute("entropy", value="7.9", to_ids=False)
    e.add_object(f)
    d = MISPObject("domain-ip")
    d.uuid = uid("2", 1)
    d.timestamp = T + 101
    d.add_attribute("domain", value="c3.evil.example", to_ids=False)
    d.add_attribute("ip", value="198.51.100.77", to_ids=False)
    d.add_attribute("ip", value="198.51.100.78", to_ids=False)
    e.add_object(d)
    u = MISPObject("url")
    u.uuid = uid("2", 2)
    u.timestamp = T + 102
    u.add_attribute("url", value="http://evil.example/payload.bin", to_ids=True)
    e.add_object(u)
    m = MISPObject("email")
    m.uuid = uid("2", 3)
    m.timestamp = T + 103
    m.add_attribute("from", value="ceo@evil.example", to_ids=True)
    m.add_attribute("subject", value="Urgent wire transfer", to_ids=True)
    m.add_attribute("to", value="finance@hospital.example", to_ids=False)
    e.add_object(m)
    p = MISPObject("ip-port")
    p.uuid = uid("2", 4)
    p.timestamp = T + 104
    p.add_attribute("ip", value="198.51.100.99", to_ids=True)
    p.add_attribute("dst-port", value="4443", to_ids=True)
    e.add_object(p)
    b = MISPObject("bank-account")
    b.uuid = uid("2", 5)
    b.timestamp = T + 105
    b.add_attribute("account", value="123456789", to_ids=False)
    e.add_object(b)
    ref = f.add_reference(u.uuid, "downloaded-from")
    ref.uuid = uid("6", 0)
    for n, o in enumerate((f, d, u, m, p, b)):
        for k, a in enumerate(o.attributes):
            a.uuid = uid("7", 100 * n + k)
            a.timestamp = o.timestamp
        o.force_timestamp = True

    for gtype, gname, guuid, value, cuuid, meta in [
        ("mitre-attack-pattern", "Attack Pattern", "c4e851fa-775f-11e7-8163-b774922098cd",
         "Phishing - T1566", "a62a8db3-f23a-4d8f-afd6-9dbc77e7813b", {"external_id": ["T1566"]}),
        ("threat-actor", "Threat Actor", "698774c7-8022-42c4-917f-8d6e4f06ada3",
         "Wizard Spider", "dfe9f2c1-3a45-4b9f-8c7e-1f2e3d4c5b6a", {"synonyms": ["UNC1878", "TEMP.MixMaster"]}),
        ("mitre-tool", "Tool", "d5cbd1a2-78f6-11e7-a833-7b9bccca9649",
         "Cobalt Strike - S0154", "aafea02e-ece5-4bb2-91a6-3bf8c7f38a39", {}),
        ("mitre-intrusion-set", "Intrusion Set", "1023f364-7831-11e7-8318-43b5531983ab",
         "FIN12 - G0159", "fd2c3b6a-5e4d-4c3b-9a8f-7e6d5c4b3a21", {}),
        ("sector", "Sector", "e1bb134c-ae4d-11e7-8aa9-f78a37325439",
         "Health", "7bb4b3a1-9b8c-4c1d-8e2f-3a4b5c6d7e8f", {}),
    ]:
        g = e.add_galaxy(type=gtype, name=gname, uuid=guuid, description=f"{gname} galaxy")
        g.add_galaxy_cluster(type=gtype, value=value, uuid=cuuid,
                             tag_name=f'misp-galaxy:{gtype}="{value}"',
                             description=f"{value} (test cluster)", meta=meta)
    e.force_timestamp = True
    for a in e.attributes:
        a.force_timestamp = True
    return e


def feed_events():
    out = []
    for n, (tlp, values) in enumerate([
        ("tlp:clear", [("ip-dst", "203.0.113.50", True), ("domain", "feed-one.example", True),
                       ("sha256", "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", True)]),
        ("tlp:amber", [("url", "http://feed-two.example/x", True), ("md5", "5d41402abc4b2a76b9719d911017c592", True),
                       ("email-src", "feed@evil.example", False)]),
    ]):
        e = MISPEvent()
        e.uuid = f"5e7b0c1a-2b3c-4d5e-8f9a-3{n:011d}"
        e.info = f"Feed event {n + 1}"
        e.date = "2026-11-30"
        e.timestamp = T + 1000 * (n + 1)
        e.distribution = 3
        e.Orgc = org()
        e.add_tag(tlp)
        for i, (t, v, ids) in enumerate(values):
            a = e.add_attribute(t, v, to_ids=ids, distribution=5)
            a.uuid = uid(str(4 + n), i)
            a.timestamp = e.timestamp
            a.force_timestamp = True
        e.force_timestamp = True
        out.append(e)
    return out


def build(outdir):
    os.makedirs(os.path.join(outdir, "feed"), exist_ok=True)
    event = json.loads(build_event().to_json())
    with open(os.path.join(outdir, "event.json"), "w") as f:
        json.dump({"Event": event}, f, indent=1)
    parser = MISPtoSTIX21Parser()
    parser.parse_misp_event({"Event": event})
    with open(os.path.join(outdir, "misp-stix.json"), "w") as f:
        f.write(parser.bundle.serialize(pretty=True))
    # The feed, as PyMISP's feed generator writes one.
    manifest, hashes = {}, []
    for e in feed_events():
        feed = e.to_feed(with_meta=True, with_distribution=True)
        hashes += [[h, e.uuid] for h in feed["Event"].pop("_hashes")]
        manifest.update(feed["Event"].pop("_manifest"))
        with open(os.path.join(outdir, "feed", f"{e.uuid}.json"), "w") as f:
            json.dump(feed, f, indent=1)
    with open(os.path.join(outdir, "feed", "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(os.path.join(outdir, "feed", "hashes.csv"), "w") as f:
        f.writelines(f"{h},{u}\n" for h, u in hashes)
    print(json.dumps({"event": EVENT, "feed": sorted(manifest)}))


def read(feed_dir):
    with open(os.path.join(feed_dir, "manifest.json")) as f:
        manifest = json.load(f)
    out = []
    for uuid in sorted(manifest):
        e = MISPEvent()
        e.load_file(os.path.join(feed_dir, f"{uuid}.json"))
        if str(e.uuid) != uuid:
            sys.exit(f"{uuid}.json holds the event {e.uuid}")
        out.append({
            "uuid": str(e.uuid),
            "info": e.info,
            "tags": [t.name for t in e.tags],
            "attributes": [
                {"type": a.type, "value": a.value, "to_ids": bool(a.to_ids), "category": a.category,
                 "tags": [t.name for t in a.tags]}
                for a in e.attributes
            ],
        })
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("build", "read"):
        sys.exit(__doc__)
    {"build": build, "read": read}[sys.argv[1]](sys.argv[2])
