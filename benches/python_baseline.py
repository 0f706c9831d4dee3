#!/usr/bin/env python3
"""A plain Python baseline for `trailwatch replay`: gzip + orjson (json if orjson is missing) + a per-identity fold.

It does a fair share of trailwatch's work on one core: decompress, parse whole records, key each event on its
principal (the session issuer for assumed roles), and keep first/last seen, counts and per-action first/last use.
It keeps nothing durable and maps no IAM action names, so it is an upper bound for such a script.

    python3 benches/python_baseline.py DIR
"""
import gzip
import os
import sys
import time

try:
    import orjson as json_impl

    loads = json_impl.loads
    PARSER = "orjson"
except ImportError:  # pragma: no cover
    import json as json_impl

    loads = json_impl.loads
    PARSER = "json"


def principal_of(identity):
    if not isinstance(identity, dict):
        return None
    kind = identity.get("type")
    if kind == "AssumedRole":
        issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
        return issuer.get("arn") or identity.get("arn")
    if kind == "AWSService" or (kind is None and identity.get("invokedBy")):
        return "service:" + identity.get("invokedBy", "")
    return identity.get("arn") or identity.get("principalId")


def main(root):
    files = []
    for dirpath, _, names in os.walk(root):
        files.extend(os.path.join(dirpath, n) for n in names if n.endswith((".json", ".gz")))
    state = {}
    records = 0
    json_bytes = 0
    started = time.perf_counter()
    for path in sorted(files):
        with open(path, "rb") as f:
            raw = f.read()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        json_bytes += len(data)
        for rec in loads(data).get("Records", []):
            records += 1
            t = rec.get("eventTime")
            principal = principal_of(rec.get("userIdentity"))
            if not t or not principal:
                continue
            p = state.get(principal)
            if p is None:
                p = state[principal] = {"first": t, "last": t, "events": 0, "errors": 0, "actions": {}}
            p["events"] += 1
            p["first"] = min(p["first"], t)
            p["last"] = max(p["last"], t)
            if rec.get("errorCode"):
                p["errors"] += 1
            action = rec.get("eventSource", "").split(".")[0] + ":" + rec.get("eventName", "")
            a = p["actions"].get(action)
            if a is None:
                p["actions"][action] = [t, t, 1]
            else:
                a[0] = min(a[0], t)
                a[1] = max(a[1], t)
                a[2] += 1
    secs = time.perf_counter() - started
    print(
        f"python {sys.version.split()[0]} + {PARSER}: {len(files)} files, {records} records in {secs:.2f}s: "
        f"{records / secs:,.0f} records/s, {json_bytes / 1e6 / secs:.1f} MB/s of JSON, {len(state)} identities"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
