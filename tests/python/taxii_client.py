"""Drive a Bluewire node's TAXII 2.1 server with the OASIS taxii2-client, as a SOC tool would.

Called by tests/tests/it/taxii.rs with one JSON argument:
  {"url": "https://127.0.0.1:PORT/taxii2/", "ca": PATH, "cert": PATH, "key": PATH,
   "user": NAME, "token": TOKEN, "expect_ids": [indicator ids the federation collection holds]}
Prints one JSON object of what it saw; exits non-zero (with the reason) on any surprise.
"""

import json
import sys

import requests
from taxii2client.common import TokenAuth
from taxii2client.v21 import Server, as_pages

MEDIA = "application/taxii+json;version=2.1"


def fail(why):
    print(json.dumps({"error": why}))
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


def federation_collection(server):
    roots = server.api_roots
    check(len(roots) == 1, f"expected one API root, got {len(roots)}")
    root = roots[0]
    check(MEDIA in root.versions, f"API root versions {root.versions}")
    by_title = {c.title: c for c in root.collections}
    check("federation" in by_title, f"no federation collection in {list(by_title)}")
    return root, by_title


def all_objects(collection, per_request):
    seen = []
    for envelope in as_pages(collection.get_objects, per_request=per_request):
        seen.extend(envelope.get("objects", []))
    return seen


def main():
    a = json.loads(sys.argv[1])
    out = {}

    # 1. Over mutual TLS with the analyst's certificate.
    mtls = Server(a["url"], verify=a["ca"], cert=(a["cert"], a["key"]))
    out["title"] = mtls.title
    root, colls = federation_collection(mtls)
    out["collections"] = sorted(colls)
    fed = colls["federation"]
    check(fed.can_read and fed.can_write, "federation collection not readable and writable")
    objects = all_objects(fed, per_request=7)
    ids = [o["id"] for o in objects if o["type"] == "indicator"]
    check(len(ids) == len(set(ids)), "an indicator came twice while paging")
    missing = sorted(set(a["expect_ids"]) - set(ids))
    check(not missing, f"paging missed {missing}")
    out["paged_indicators"] = len(ids)
    leaked = sorted(set(a["absent_ids"]) & {o["id"] for o in objects})
    check(not leaked, f"the federation collection shows {leaked}: a cluster's or a retracted message")
    cluster = [c for t, c in colls.items() if t != "federation"][0]
    in_cluster = {o["id"] for o in all_objects(cluster, per_request=50)}
    check(set(a["cluster_ids"]) <= in_cluster, f"the cluster collection lacks {a['cluster_ids']}")
    check(not (set(a["expect_ids"]) & in_cluster), "federation objects in the cluster collection")
    one = fed.get_object(a["expect_ids"][0])
    check([o["id"] for o in one["objects"]] == [a["expect_ids"][0]], f"get_object gave {one}")
    manifest = fed.get_manifest()
    check(
        all(m["media_type"] == "application/stix+json;version=2.1" for m in manifest["objects"]),
        "manifest media types",
    )
    check(set(a["expect_ids"]) <= {m["id"] for m in manifest["objects"]}, "manifest lacks objects")
    versions = fed.object_versions(a["expect_ids"][0])
    check(len(versions["versions"]) == 1, f"versions {versions}")
    out["manifest"] = len(manifest["objects"])

    # 2. With the token (HTTP Basic: user name and token), and as a Bearer token.
    basic = Server(a["url"], verify=a["ca"], user=a["user"], password=a["token"])
    _, colls_basic = federation_collection(basic)
    check(sorted(colls_basic) == out["collections"], "the token sees other collections")
    bearer = Server(a["url"], verify=a["ca"], auth=TokenAuth(a["token"]))
    _, colls_bearer = federation_collection(bearer)
    fed_t = colls_bearer["federation"]

    # Pagination stays stable while messages arrive: take a first page, post new
    # objects, then follow `next` to the end: nothing twice, nothing skipped.
    first = fed_t.get_objects(limit=5)
    check(first.get("more") is True and first.get("next"), f"first page {first}")
    t = "2026-11-30T09:00:00.000Z"
    posted = [
        {
            "type": "indicator", "spec_version": "2.1",
            "id": f"indicator--7d1f2c3b-4a5e-4f60-8b7c-00000000000{i}",
            "created": t, "modified": t, "name": f"posted {i}", "description": "from a SOC tool",
            "pattern": f"[ipv4-addr:value = '203.0.113.{i}']", "pattern_type": "stix",
            "valid_from": t,
            "object_marking_refs": ["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"],
        }
        for i in range(1, 4)
    ]
    status = fed_t.add_objects(json.dumps({"objects": posted}), wait_for_completion=False)
    check(status.status == "complete", f"status {status.status}")
    check(status.success_count == 3 and status.failure_count == 0, f"status {status._raw}")
    out["status_id"] = status.id
    again = fed_t.get_objects(limit=5, next=first["next"])
    seen = [o["id"] for o in first["objects"]]
    page = again
    while True:
        seen.extend(o["id"] for o in page.get("objects", []))
        if not page.get("more"):
            break
        page = fed_t.get_objects(limit=5, next=page["next"])
    inds = [i for i in seen if i.startswith("indicator--")]
    check(len(inds) == len(set(inds)), "an object came twice across pages while messages arrived")
    check(set(a["expect_ids"]) <= set(inds), "an object was skipped while messages arrived")
    check({p["id"] for p in posted} <= set(inds), "the posted objects are not in the collection")
    out["after_post"] = len(set(inds))

    # 3. The spec's answers for what is wrong.
    base = a["url"].rsplit("/taxii2/", 1)[0]
    coll_url = f"{base}/api/collections/{fed.id}/objects/"
    s = requests.Session()
    s.verify = a["ca"]
    codes = {}
    codes["no_auth"] = s.get(coll_url, headers={"Accept": MEDIA}).status_code
    codes["bad_token"] = s.get(coll_url, headers={"Accept": MEDIA, "Authorization": "Bearer bwt_00_nope"}).status_code
    wrong = a["token"][:-1] + ("0" if a["token"][-1] != "0" else "1")
    codes["wrong_secret"] = s.get(coll_url, headers={"Accept": MEDIA, "Authorization": f"Bearer {wrong}"}).status_code
    codes["revoked_token"] = s.get(
        coll_url, headers={"Accept": MEDIA, "Authorization": f"Bearer {a['revoked_token']}"}).status_code
    codes["basic_other_user"] = s.get(coll_url, headers={"Accept": MEDIA}, auth=("alice", a["token"])).status_code
    auth = {"Authorization": f"Bearer {a['token']}"}
    codes["wrong_accept"] = s.get(coll_url, headers={**auth, "Accept": "application/json"}).status_code
    r = s.post(
        coll_url, headers={**auth, "Accept": MEDIA, "Content-Type": "application/json"},
        data=json.dumps({"objects": posted}))
    codes["wrong_content_type"] = r.status_code
    # Refused before its body was read: the server says it closes the connection.
    check(r.headers.get("Connection", "").lower() == "close", f"415 without Connection: close: {r.headers}")
    codes["unknown_collection"] = s.get(
        f"{base}/api/collections/00000000-0000-4000-8000-000000000000/", headers={**auth, "Accept": MEDIA}).status_code
    codes["unknown_object"] = s.get(
        f"{base}/api/collections/{fed.id}/objects/indicator--00000000-0000-4000-8000-000000000000/",
        headers={**auth, "Accept": MEDIA}).status_code
    codes["not_json"] = s.post(
        coll_url, headers={**auth, "Accept": MEDIA, "Content-Type": MEDIA}, data="{nope").status_code
    status_url = f"{base}/api/status/{status.id}/"
    r = s.get(status_url, headers={**auth, "Accept": MEDIA})
    codes["status"] = r.status_code
    check(r.headers.get("Content-Type") == MEDIA, f"status content type {r.headers.get('Content-Type')}")
    r = s.get(coll_url, headers={**auth, "Accept": MEDIA}, params={"limit": 2, "match[type]": "indicator"})
    check(r.headers.get("X-TAXII-Date-Added-First") and r.headers.get("X-TAXII-Date-Added-Last"), "date headers")
    check(all(o["type"] == "indicator" for o in r.json()["objects"]), "match[type] let other types through")
    out["codes"] = codes
    print(json.dumps(out))


if __name__ == "__main__":
    main()
