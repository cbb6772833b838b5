"""Checks the audit chain of an export (`jumgw store export`) from the
format its documentation describes (src/store/trail.rs, "The bytes an
entry's hash covers"), with no code of the gateway: each entry's hash
recomputed over its fields in the documented order, each link to the
entry before, the numbering.

Usage: audit_chain.py EXPORT.jsonl
Prints {"entries": n, "head_seq": s, "head_hash": h, "with_signer": k} and
exits 0 when the chain holds; exits 1 naming the first entry that breaks it.
"""

import hashlib
import json
import sys

# In the order they are hashed; signer_sha256 only when present.
FIELDS = ["seq", "at_ms", "actor", "official", "action", "request_id", "case",
          "service", "legal_basis", "purpose", "outcome", "subject"]
OPTIONAL = ["signer_sha256"]
GENESIS = "0" * 64


def covered(entry):
    unknown = set(entry) - set(FIELDS) - set(OPTIONAL) - {"prev", "hash"}
    if unknown:
        raise ValueError(f"fields the documented format does not name: {sorted(unknown)}")
    obj = {k: entry[k] for k in FIELDS}
    for k in OPTIONAL:
        if entry.get(k) is not None:
            obj[k] = entry[k]
    obj["prev"] = entry["prev"]
    obj["hash"] = ""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def main(path):
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            if item.get("kind") == "audit":
                entries.append(item["entry"])
    entries.sort(key=lambda e: e["seq"])
    prev, seq, with_signer = GENESIS, 0, 0
    for e in entries:
        n = e["seq"]
        if n != seq + 1:
            return fail(f"entry {seq + 1} is missing (next is {n})")
        if e["prev"] != prev:
            return fail(f"entry {n} does not link to the hash of entry {seq}")
        try:
            digest = hashlib.sha256(covered(e)).hexdigest()
        except (KeyError, ValueError) as why:
            return fail(f"entry {n}: {why}")
        if digest != e["hash"]:
            return fail(f"entry {n}: its hash {e['hash']} is not the SHA-256 of its fields, {digest}")
        with_signer += e.get("signer_sha256") is not None
        prev, seq = e["hash"], n
    print(json.dumps({"entries": len(entries), "head_seq": seq, "head_hash": prev,
                      "with_signer": with_signer}))
    return 0


def fail(msg):
    print(msg, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
