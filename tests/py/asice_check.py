"""Checks an ASiC-E container with independent code: Python's zipfile for
the container rules, pyasice (the Estonian ASiC-E/XAdES library) for the
manifest, the XAdES signature and its signature timestamp, and hashlib
for every file the signature references (pyasice itself does not digest
the data files).

Usage: asice_check.py CONTAINER.asice
Prints one JSON object; exits 0 when every check passed.
"""

import base64
import hashlib
import json
import sys
import types
import zipfile

# pyasice imports oscrypto at import time, and oscrypto 1.3.0 (the last
# release) cannot parse the version string of OpenSSL 3.0.10 and later
# ("Error detecting the version of libcrypto", oscrypto issue #78). The
# verification paths used here never call oscrypto (signatures go through
# `cryptography`, timestamps through asn1crypto): a stand-in for the two
# names pyasice imports lets it load.
shim = types.ModuleType("oscrypto")
shim.asymmetric = types.ModuleType("oscrypto.asymmetric")


class _Certificate:  # never instantiated on the verification path
    pass


def _load_certificate(data):
    raise RuntimeError("oscrypto is not available here")


shim.asymmetric.Certificate = _Certificate
shim.asymmetric.load_certificate = _load_certificate
sys.modules.setdefault("oscrypto", shim)
sys.modules.setdefault("oscrypto.asymmetric", shim.asymmetric)

from lxml import etree  # noqa: E402
from pyasice import Container  # noqa: E402

DS = "http://www.w3.org/2000/09/xmldsig#"


def main(path):
    out = {"checks": [], "ok": True}

    def check(name, ok, detail=""):
        out["checks"].append({"check": name, "ok": bool(ok), "detail": str(detail)})
        if not ok:
            out["ok"] = False

    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        first = infos[0]
        check("mimetype first", first.filename == "mimetype", first.filename)
        check("mimetype stored", first.compress_type == zipfile.ZIP_STORED, first.compress_type)
        check("mimetype no extra field", first.extra == b"", first.extra)
        check(
            "mimetype content",
            z.read("mimetype") == b"application/vnd.etsi.asic-e+zip",
            z.read("mimetype"),
        )
        check("zip CRCs", z.testzip() is None, z.testzip())
        names = z.namelist()
        data = {n: z.read(n) for n in names}

    try:
        with open(path, "rb") as f:
            container = Container(f)
        check("pyasice opens the container (manifest matches)", True)
    except Exception as e:  # pyasice raises its own ContainerError
        check("pyasice opens the container (manifest matches)", False, repr(e))
        print(json.dumps(out))
        return 1

    signatures = list(container.iter_signatures_with_filenames())
    check("one signature file", len(signatures) == 1, [n for _, n in signatures])
    for sig, name in signatures:
        try:
            sig.verify()
            check(f"pyasice: {name} signature value", True)
        except Exception as e:
            check(f"pyasice: {name} signature value", False, repr(e))
        try:
            sig.verify_ts_response()
            check(f"pyasice: {name} signature timestamp", True)
        except Exception as e:
            check(f"pyasice: {name} signature timestamp", False, repr(e.__cause__ or e))
        root = etree.fromstring(data[name])
        refs = [
            r
            for r in root.iter("{%s}Reference" % DS)
            if not (r.get("URI") or "").startswith("#")
        ]
        covered = set()
        for r in refs:
            uri = r.get("URI")
            want = base64.b64decode(r.find("{%s}DigestValue" % DS).text)
            got = hashlib.sha256(data[uri]).digest() if uri in data else None
            check(f"digest of {uri}", got == want)
            covered.add(uri)
        files = {n for n in names if n != "mimetype" and not n.startswith("META-INF/")}
        check("every data file is signed", files == covered, sorted(files ^ covered))
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
