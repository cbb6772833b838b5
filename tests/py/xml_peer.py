#!/usr/bin/env python3
"""Independent XML implementations the Rust tests compare against.

lxml (libxml2) canonicalises, signxml and python-xmlsec (libxmlsec1) sign
and verify. The Rust side never trusts its own output alone: every claim of
interoperability is checked here. Commands print JSON on stdout.

  c14n-gen SEED COUNT OUT.jsonl   random documents + lxml's canonical forms
  c14n FILE...                    lxml's canonical forms of files
  signxml-sign KEY CERT ALG IN OUT
  signxml-verify CA FILE          exit 0 valid, 1 invalid
  xmlsec-verify CA FILE           (python-xmlsec) exit 0 valid, 1 invalid
  xsd-validate SCHEMA FILE...     (xmlschema, pure Python: no libxml2) one JSON
                                  object, file -> {"valid", "reason"}
  bench SECONDS SMALL_SIGNED SMALL LARGE KEY CERT CA
"""
import json
import random
import sys
import time
from io import BytesIO

from lxml import etree

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False, huge_tree=False)


def c14n_forms(data: bytes, prefixes=None):
    tree = etree.parse(BytesIO(data), PARSER)
    out = {
        "exc": etree.tostring(tree, method="c14n", exclusive=True, with_comments=False).decode(),
        "exc_comments": etree.tostring(tree, method="c14n", exclusive=True, with_comments=True).decode(),
        "inc": etree.tostring(tree, method="c14n", exclusive=False, with_comments=False).decode(),
    }
    if prefixes:
        out["exc_prefixes"] = etree.tostring(
            tree, method="c14n", exclusive=True, with_comments=False, inclusive_ns_prefixes=prefixes
        ).decode()
    return out


# ---------------------------------------------------------------- generator

# No '&' in namespace URIs: libxml2 writes namespace URIs unescaped in C14N,
# while the spec (and we) escape them like attribute values; see
# tests/vectors/README.md.
URIS = ["http://a.example/ns", "urn:b", "http://c.example/x?y=1;z=2", "urn:x-sifra:%C5%A1", "http://a.example/ns/"]
PREFIXES = ["a", "b", "c", "p", "ds"]
LOCALS = ["e", "f", "item", "\u017eeton", "Parcel", "x1"]
TEXT_CHARS = "ab \u0107\u0111\u0160 <>&\"'\t\n\r\r\n]\u00e9\u4e2d"


def esc_text(s, rnd):
    out = []
    for ch in s:
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append(rnd.choice(["&gt;", ">"]) if out[-1:] != ["]"] else "&gt;")
        elif ch == "]":
            out.append("]")
        elif ch == "\r":
            out.append(rnd.choice(["&#13;", "&#xD;", "\r"]))
        else:
            out.append(ch)
    s2 = "".join(out)
    return s2.replace("]]>", "]]&gt;")


def esc_attr(s, rnd, quote):
    out = []
    for ch in s:
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == quote:
            out.append("&quot;" if quote == '"' else "&apos;")
        elif ch in "\t\n\r":
            # literal whitespace normalises to a space; references survive
            out.append(rnd.choice(["&#%d;" % ord(ch), "&#x%X;" % ord(ch), ch]))
        else:
            out.append(ch)
    return "".join(out)


def rand_str(rnd, n):
    return "".join(rnd.choice(TEXT_CHARS) for _ in range(rnd.randint(0, n)))


def gen_element(rnd, scope, depth):
    """scope: dict prefix -> uri ('' for default) in scope."""
    scope = dict(scope)
    decls = []
    for _ in range(rnd.choice([0, 0, 1, 1, 2, 3])):
        kind = rnd.random()
        if kind < 0.25:
            uri = rnd.choice(URIS + [""])
            if not any(p == "" for p, _ in decls):
                decls.append(("", uri))
                scope[""] = uri
        else:
            p = rnd.choice(PREFIXES)
            if any(q == p for q, _ in decls):
                continue
            uri = rnd.choice(URIS)
            decls.append((p, uri))
            scope[p] = uri
    prefixed = [p for p in scope if p]
    if prefixed and rnd.random() < 0.5:
        pfx = rnd.choice(prefixed)
        name = pfx + ":" + rnd.choice(LOCALS)
    else:
        name = rnd.choice(LOCALS)
    attrs = []
    seen = set()
    for _ in range(rnd.choice([0, 0, 1, 2, 3, 4])):
        r = rnd.random()
        if r < 0.15:
            an, key = "xml:" + rnd.choice(["lang", "space", "id"]), ("xml", None)
            key = ("http://www.w3.org/XML/1998/namespace", an[4:])
        elif r < 0.5 and prefixed:
            p = rnd.choice(prefixed)
            local = rnd.choice(["id", "k", "z", "a", "\u0161"])
            an, key = p + ":" + local, (scope[p], local)
        else:
            local = rnd.choice(["id", "k", "z", "a", "b", "\u0161"])
            an, key = local, ("", local)
        if key in seen:
            continue
        seen.add(key)
        attrs.append((an, rand_str(rnd, 8)))
    parts = ["<" + name]
    for p, uri in decls:
        q = rnd.choice(['"', "'"])
        parts.append(" xmlns%s=%s%s%s" % (":" + p if p else "", q, esc_attr(uri, rnd, q), q))
    for an, v in attrs:
        q = rnd.choice(['"', "'"])
        parts.append(" %s=%s%s%s" % (an, q, esc_attr(v, rnd, q), q))
    children = []
    if depth < 5:
        for _ in range(rnd.choice([0, 1, 2, 3, 4])):
            r = rnd.random()
            if r < 0.45:
                children.append(gen_element(rnd, scope, depth + 1))
            elif r < 0.75:
                children.append(esc_text(rand_str(rnd, 12), rnd))
            elif r < 0.85:
                children.append("<![CDATA[%s]]>" % rand_str(rnd, 8).replace("]]>", ""))
            elif r < 0.93:
                children.append("<!--%s-->" % rand_str(rnd, 8).replace("-", "").replace("\r", ""))
            else:
                children.append("<?pi-%d %s?>" % (rnd.randint(0, 9), rand_str(rnd, 6).replace("?>", "").replace("<", "").replace("&", "")))
    if not children and rnd.random() < 0.5:
        parts.append(rnd.choice(["/>", " />"]))
        return "".join(parts)
    parts.append(">")
    parts.extend(children)
    parts.append("</%s>" % name)
    return "".join(parts)


def gen_doc(rnd):
    out = []
    if rnd.random() < 0.3:
        out.append('<?xml version="1.0" encoding="UTF-8"?>\n')
    for _ in range(rnd.choice([0, 0, 1, 2])):
        out.append(rnd.choice(["<!-- before -->", "<?before x?>", "\n", "<?p?>"]))
    out.append(gen_element(rnd, {}, 0))
    for _ in range(rnd.choice([0, 0, 1, 2])):
        out.append(rnd.choice(["<!--after\r\n-->", "<?after y ?>", "\n  "]))
    return "".join(out)


def cmd_c14n_gen(seed, count, path):
    rnd = random.Random(int(seed))
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        while n < int(count):
            doc = gen_doc(rnd)
            data = doc.encode("utf-8")
            try:
                # lxml silently drops "#default" from inclusive_ns_prefixes (it keeps
                # only names in the document dictionary), so it cannot be an oracle
                # for it; the W3C merlin-exc-c14n-one digests cover "#default".
                prefixes = rnd.sample(PREFIXES, rnd.randint(0, 2))
                forms = c14n_forms(data, prefixes)
            except etree.XMLSyntaxError as e:
                # the generator aims for well-formed input; skip rare misses
                continue
            f.write(json.dumps({"doc": doc, "prefixes": prefixes, **forms}, ensure_ascii=False) + "\n")
            n += 1
    print(json.dumps({"written": n}))


def cmd_c14n(files):
    out = {}
    for name in files:
        with open(name, "rb") as f:
            out[name] = c14n_forms(f.read())
    print(json.dumps(out, ensure_ascii=False))


# ---------------------------------------------------------------- signatures

def cmd_signxml_sign(key, cert, alg, src, dst):
    from signxml import XMLSigner, methods
    from signxml.algorithms import SignatureMethod, DigestAlgorithm, CanonicalizationMethod

    sm = {"rsa-sha256": SignatureMethod.RSA_SHA256, "ecdsa-sha256": SignatureMethod.ECDSA_SHA256}[alg]
    root = etree.parse(src, PARSER).getroot()
    soap = "http://schemas.xmlsoap.org/soap/envelope/"
    header = root.find("{%s}Header" % soap)
    if header is not None:
        # signxml puts an enveloped signature where a placeholder stands
        ph = etree.SubElement(header, "{http://www.w3.org/2000/09/xmldsig#}Signature", nsmap={"ds": "http://www.w3.org/2000/09/xmldsig#"})
        ph.set("Id", "placeholder")
    signer = XMLSigner(
        method=methods.enveloped,
        signature_algorithm=sm,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signed = signer.sign(root, key=open(key, "rb").read(), cert=open(cert, "rb").read())
    with open(dst, "wb") as f:
        f.write(etree.tostring(signed))


def cmd_signxml_verify(ca, path):
    from signxml import XMLVerifier
    from signxml.algorithms import SignatureMethod
    from signxml.verifier import SignatureConfiguration

    try:
        cfg = SignatureConfiguration(
            signature_methods=frozenset([SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256]),
        )
        XMLVerifier().verify(open(path, "rb").read(), ca_pem_file=ca, expect_config=cfg)
    except Exception as e:  # any failure is "invalid" to the caller
        print("invalid: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
    print("valid")


def xmlsec_manager(ca):
    import xmlsec

    mgr = xmlsec.KeysManager()
    mgr.load_cert(ca, xmlsec.constants.KeyDataFormatCertPem, xmlsec.constants.KeyDataTypeTrusted)
    return mgr


def xmlsec_verify(mgr, data):
    """Parse and verify, reusing a loaded trust store (as a server would)."""
    import xmlsec

    doc = etree.fromstring(data, PARSER)
    node = xmlsec.tree.find_node(doc, xmlsec.constants.NodeSignature)
    ctx = xmlsec.SignatureContext(mgr)
    ctx.verify(node)


def cmd_xmlsec_verify(ca, path):
    try:
        xmlsec_verify(xmlsec_manager(ca), open(path, "rb").read())
    except Exception as e:
        print("invalid: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
    print("valid")


def cmd_xsd_validate(schema, files):
    # xmlschema is the XSD engine that shares no code with libxml2 (ours and
    # xmllint both are libxml2): a second opinion on every schema claim.
    import xmlschema

    xsd = xmlschema.XMLSchema10(schema)
    out = {}
    for name in files:
        errors = list(xsd.iter_errors(name))
        out[name] = {
            "valid": not errors,
            "reason": "; ".join(e.reason or str(e) for e in errors),
        }
    print(json.dumps(out))


def rate(seconds, f):
    end = time.perf_counter() + seconds / 10
    while time.perf_counter() < end:
        f()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(4):
            f()
        n += 4
        if time.perf_counter() - start >= seconds:
            break
    return n / (time.perf_counter() - start)


def cmd_bench(seconds, small_signed, small, large, key, cert, ca):
    import xmlsec

    seconds = float(seconds)
    small_signed_b = open(small_signed, "rb").read()
    small_b = open(small, "rb").read()
    large_b = open(large, "rb").read()
    out = {}
    mgr = xmlsec_manager(ca)
    out["xmlsec_verify_small_per_s"] = rate(seconds, lambda: xmlsec_verify(mgr, small_signed_b))

    tmpl_key = xmlsec.Key.from_file(key, xmlsec.constants.KeyDataFormatPem)
    tmpl_key.load_cert_from_file(cert, xmlsec.constants.KeyDataFormatPem)

    def sign_small():
        doc = etree.fromstring(small_b, PARSER)
        header = doc.find("{http://schemas.xmlsoap.org/soap/envelope/}Header")
        sig = xmlsec.template.create(doc, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha256, ns="ds")
        header.append(sig)
        ref = xmlsec.template.add_reference(sig, xmlsec.constants.TransformSha256, uri="")
        xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
        xmlsec.template.add_transform(ref, xmlsec.constants.TransformExclC14N)
        ki = xmlsec.template.ensure_key_info(sig)
        xmlsec.template.add_x509_data(ki)
        ctx = xmlsec.SignatureContext()
        ctx.key = tmpl_key
        ctx.sign(sig)
        etree.tostring(doc)

    out["xmlsec_sign_small_per_s"] = rate(seconds, sign_small)

    def c14n_large():
        tree = etree.parse(BytesIO(large_b), PARSER)
        etree.tostring(tree, method="c14n", exclusive=True)

    r = rate(seconds, c14n_large)
    out["lxml_c14n_large_mb_s"] = r * len(large_b) / 1e6
    tree = etree.parse(BytesIO(large_b), PARSER)
    r2 = rate(seconds, lambda: etree.tostring(tree, method="c14n", exclusive=True))
    out["lxml_c14n_large_preparsed_mb_s"] = r2 * len(large_b) / 1e6
    print(json.dumps(out))


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    {
        "c14n-gen": cmd_c14n_gen,
        "c14n": lambda *a: cmd_c14n(a),
        "signxml-sign": cmd_signxml_sign,
        "signxml-verify": cmd_signxml_verify,
        "xmlsec-verify": cmd_xmlsec_verify,
        "xsd-validate": lambda schema, *files: cmd_xsd_validate(schema, files),
        "bench": cmd_bench,
    }[cmd](*args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
