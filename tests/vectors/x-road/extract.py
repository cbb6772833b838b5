#!/usr/bin/env python3
"""Writes the vendored X-Road files of this folder from a clone of
nordic-institute/X-Road at the commit named in README.md:

    python3 extract.py /path/to/X-Road COMMIT

The schemas (and ErrorCodes.java) are copied as they are; the example messages are the XML code
blocks of the named annex sections of the two protocol documents, written
byte for byte (an annex with HTTP transport headers, F and G, is split into
`<name>.content-type` and `<name>.body`, the body's line ends made CRLF as
MIME wants)."""
import re
import subprocess
import sys

repo, commit = sys.argv[1], sys.argv[2]


def show(path):
    return subprocess.run(["git", "-C", repo, "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout


SCHEMAS = {
    "xroad.xsd": "src/addons/wsdlvalidator/src/test/resources/xsd/xroad.xsd",
    "identifiers.xsd": "src/addons/wsdlvalidator/src/test/resources/xsd/identifiers.xsd",
    "xml.xsd": "src/addons/wsdlvalidator/src/test/resources/xsd/xml.xsd",
    # The security server's fault codes, for the classification's table test.
    "ErrorCodes.java": "src/common/common-core/src/main/java/ee/ria/xroad/common/ErrorCodes.java",
}
MESS = "doc/Protocols/pr-mess_x-road_message_protocol.md"
META = "doc/Protocols/pr-meta_x-road_service_metadata_protocol.md"
# (output name, document, heading that opens the section)
EXAMPLES = [
    ("pr-mess-D1-fault-technical.xml", MESS, "### D.1 Technical"),
    ("pr-mess-D2-fault-non-technical.xml", MESS, "### D.2 Non-technical"),
    ("pr-mess-E1-request.xml", MESS, "### E.1 Request"),
    ("pr-mess-E2-response.xml", MESS, "### E.2 Response"),
    ("pr-mess-F-swa", MESS, "## Annex F Example Request with Attachment"),
    ("pr-mess-G-mtom", MESS, "## Annex G Example Request with MTOM Attachment"),
    ("pr-meta-C2-listMethods-request.xml", META, "### C.2 listMethods Request"),
    ("pr-meta-C3-listMethods-response.xml", META, "### C.3 listMethods Response"),
    ("pr-meta-C4-allowedMethods-request.xml", META, "### C.4 allowedMethods Request"),
    ("pr-meta-C5-allowedMethods-response.xml", META, "### C.5 allowedMethods Response"),
]

for name, src in SCHEMAS.items():
    open(name, "wb").write(show(src))

for name, doc, heading in EXAMPLES:
    text = show(doc).decode("utf-8")
    start = text.index(heading + "\n")
    block = re.search(r"```xml\n(.*?)```", text[start:], re.S).group(1)
    if name.endswith(".xml"):
        open(name, "w", encoding="utf-8", newline="\n").write(block)
        continue
    # The transport headers (up to the first empty line) and the MIME body.
    lines = block.split("\n")
    while not lines[0].startswith("Content-Type:"):
        lines.pop(0)
    head = []
    while lines[0].strip():
        head.append(lines.pop(0))
    ctype = " ".join(l.strip() for l in head if not l.startswith("MIME-Version"))
    ctype = ctype[len("Content-Type:"):].strip()
    lines.pop(0)
    open(name + ".content-type", "w").write(ctype + "\n")
    open(name + ".body", "wb").write("\r\n".join(lines).rstrip("\r\n").encode() + b"\r\n")
