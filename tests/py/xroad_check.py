#!/usr/bin/env python3
"""An independent check of X-Road requests (message protocol 4.0) as the
gateway builds them: each X-Road header validated with xmlschema against
NIIS's official xroad.xsd and identifiers.xsd (tests/vectors/x-road/, the
schemas' URL imports mapped to those files), and the rules of pr-mess that
a schema cannot say.

    xroad_check.py COUNTRY FILE...

prints one JSON object per file: {"file": ..., "errors": [...]}; an empty
list means the request conforms."""
import json
import os
import re
import sys

import xmlschema
from lxml import etree

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "vectors", "x-road")
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
XRD = "http://x-road.eu/xsd/xroad.xsd"
ID = "http://x-road.eu/xsd/identifiers"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

schema = xmlschema.XMLSchema(
    os.path.join(VECTORS, "xroad.xsd"),
    locations=[
        (ID, os.path.join(VECTORS, "identifiers.xsd")),
        ("http://www.w3.org/XML/1998/namespace", os.path.join(VECTORS, "xml.xsd")),
    ],
)

ORDER = ["client", "service", "id", "userId", "issue", "protocolVersion"]


def check(path, country):
    errors = []
    root = etree.parse(path, etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    if root.tag != f"{{{SOAP}}}Envelope":
        return [f"root is {root.tag}"]
    kids = [k for k in root if isinstance(k.tag, str)]
    if [k.tag for k in kids] != [f"{{{SOAP}}}Header", f"{{{SOAP}}}Body"]:
        return [f"envelope holds {[k.tag for k in kids]}"]
    header, body = kids
    xrd = [h for h in header if isinstance(h.tag, str) and h.tag.startswith(f"{{{XRD}}}")]
    for h in xrd:
        for e in schema.iter_errors(etree.tostring(h)):
            errors.append(f"{etree.QName(h).localname}: {e.reason}")
    names = [etree.QName(h).localname for h in xrd]
    # userId and issue are optional (a metaservice request has neither).
    want = [n for n in ORDER if n in names or n not in ("userId", "issue")]
    if names != want:
        errors.append(f"X-Road headers {names}, expected {want}")
    first = [etree.QName(h).localname for h in header if isinstance(h.tag, str)][: len(want)]
    if first != want:
        errors.append(f"the header does not start with the X-Road headers: {first}")
    if header.find(f"{{{XRD}}}requestHash") is not None:
        errors.append("a request has a requestHash")
    service = header.find(f"{{{XRD}}}service")
    code = service.findtext(f"{{{ID}}}serviceCode") if service is not None else None
    if service is not None and service.get(f"{{{ID}}}objectType") != "SERVICE":
        errors.append("service objectType is not SERVICE")
    if header.findtext(f"{{{XRD}}}protocolVersion") != "4.0":
        errors.append("protocolVersion is not 4.0")
    mid = header.findtext(f"{{{XRD}}}id") or ""
    if not UUID4.match(mid):
        errors.append(f"id {mid!r} is not a UUID v4")
    user = header.findtext(f"{{{XRD}}}userId")
    if user is not None and not (user.startswith(country) and len(user) > len(country)):
        errors.append(f"userId {user!r} does not start with {country}")
    content = [b for b in body if isinstance(b.tag, str)]
    if len(content) != 1:
        errors.append(f"the body holds {len(content)} elements")
    elif code in ("listMethods", "allowedMethods"):
        if content[0].tag != f"{{{XRD}}}{code}" or len(content[0]):
            errors.append(f"a metaservice body is an empty xrd:{code}, not {content[0].tag}")
    elif etree.QName(content[0]).localname != code:
        errors.append(f"the wrapper is {content[0].tag}, not the service code {code!r}")
    return errors


country = sys.argv[1]
for f in sys.argv[2:]:
    print(json.dumps({"file": f, "errors": check(f, country)}))
