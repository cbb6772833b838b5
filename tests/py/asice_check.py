"""Checks an ASiC-E container with independent code: Python's zipfile for
the container rules, lxml and hashlib for the manifest and every file the
signature references (pyasice itself does not digest the data files),
and pyasice (the Estonian ASiC-E/XAdES library) for the manifest, the
XAdES signature value and its signature timestamp. The zipfile and
hashlib checks are made whether or not pyasice opens the container, so
that each check's verdict is seen on its own.

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
MANIFEST = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"


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

    # Our own reading (zipfile, lxml, hashlib), whatever pyasice makes of
    # the container: the manifest lists exactly the data files, and each
    # signature's references are the SHA-256 of exactly those files.
    files = {n for n in names if n != "mimetype" and not n.startswith("META-INF/")}
    listed = set()
    if "META-INF/manifest.xml" in data:
        m = etree.fromstring(data["META-INF/manifest.xml"])
        listed = {
            e.get("{%s}full-path" % MANIFEST)
            for e in m.iter("{%s}file-entry" % MANIFEST)
        } - {"/"}
    check("the manifest lists every data file and no other", files == listed, sorted(files ^ listed))
    signature_files = sorted(
        n for n in names if n.startswith("META-INF/") and "signatures" in n and n.endswith(".xml")
    )
    check("one signature file", len(signature_files) == 1, signature_files)
    for name in signature_files:
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
            check(f"digest of {uri}", got == want, "missing" if got is None else "")
            covered.add(uri)
        check("every data file is signed", files == covered, sorted(files ^ covered))

    # X-Road: each evidence/{id}.asice is the security server's signed
    # document of documents/{id}.xml, read here with zipfile alone: an
    # ASiC-E whose message.xml is the document byte for byte, whose
    # attachment1.. are the document's attachments, with a signature.
    for name in sorted(n for n in names if n.startswith("evidence/") and n.endswith(".asice")):
        rid = name[len("evidence/"):-len(".asice")]
        try:
            import io

            with zipfile.ZipFile(io.BytesIO(data[name])) as inner:
                inner_names = inner.namelist()
                check(
                    f"{name}: mimetype",
                    "mimetype" in inner_names
                    and inner.read("mimetype") == b"application/vnd.etsi.asic-e+zip",
                    inner_names,
                )
                check(f"{name}: CRCs", inner.testzip() is None, inner.testzip())
                check(
                    f"{name}: message.xml is documents/{rid}.xml",
                    "message.xml" in inner_names
                    and inner.read("message.xml") == data.get(f"documents/{rid}.xml"),
                )
                attached = sorted(
                    (n for n in names if n.startswith(f"documents/{rid}.attachment-")),
                    key=lambda n: int(n.rsplit("-", 1)[1]),
                )
                inner_attached = sorted(n for n in inner_names if n.startswith("attachment"))
                check(
                    f"{name}: as many attachments as the document",
                    len(attached) == len(inner_attached),
                    (attached, inner_attached),
                )
                for i, a in enumerate(attached, 1):
                    check(
                        f"{name}: attachment{i} is {a}",
                        f"attachment{i}" in inner_names and inner.read(f"attachment{i}") == data[a],
                    )
                check(
                    f"{name}: a signature",
                    any(
                        n.startswith("META-INF/") and "signatures" in n and n.endswith(".xml")
                        for n in inner_names
                    ),
                    inner_names,
                )
        except zipfile.BadZipFile as e:
            check(f"{name}: a zip", False, repr(e))

    # pyasice's verdict: it opens the container (its own manifest check),
    # verifies the signature value and the signature's timestamp.
    try:
        with open(path, "rb") as f:
            container = Container(f)
        check("pyasice opens the container (manifest matches)", True)
    except Exception as e:  # pyasice raises its own ContainerError
        check("pyasice opens the container (manifest matches)", False, repr(e))
        print(json.dumps(out))
        return 1
    for sig, name in container.iter_signatures_with_filenames():
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
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
