"""A stand-in X-Road security server's metaservices for the tests,
independent of our code (Python's ssl and xml.etree): it answers
`listMethods` and `allowedMethods` (service metadata protocol, pr-meta)
over mutual TLS, as a security server answers a client information system.

    xroad_metaservices.py CERT KEY CLIENT_CA LISTED ALLOWED

LISTED and ALLOWED are comma-separated service codes. The client's
certificate is required (CLIENT_CA). A request must carry the X-Road
headers client, service (objectType SERVICE, serviceCode listMethods or
allowedMethods), id and protocolVersion 4.0 and a body element named after
the service code; else it gets a SOAP fault as a security server sends one.
Listens on a free port and prints "listening PORT".
"""
import ssl
import sys
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cert, key, client_ca, listed, allowed = sys.argv[1:6]
codes = {
    "listMethods": [c for c in listed.split(",") if c],
    "allowedMethods": [c for c in allowed.split(",") if c],
}
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
XRD = "http://x-road.eu/xsd/xroad.xsd"
ID = "http://x-road.eu/xsd/identifiers"


def fault(code, text):
    return (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP}"><SOAP-ENV:Body><SOAP-ENV:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{text}</faultstring>"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )


def answer(body):
    env = ET.fromstring(body)
    header = env.find(f"{{{SOAP}}}Header")
    if header is None:
        return fault("Server.ClientProxy.InvalidSoap", "no header")
    for name in ("client", "service", "id", "protocolVersion"):
        if header.find(f"{{{XRD}}}{name}") is None:
            return fault("Server.ClientProxy.InvalidSoap", f"no {name} header")
    if header.find(f"{{{XRD}}}protocolVersion").text != "4.0":
        return fault("Server.ClientProxy.InvalidProtocolVersion", "not 4.0")
    service = header.find(f"{{{XRD}}}service")
    if service.get(f"{{{ID}}}objectType") != "SERVICE":
        return fault("Server.ClientProxy.InvalidSoap", "service objectType")
    code = service.find(f"{{{ID}}}serviceCode").text
    body_el = list(env.find(f"{{{SOAP}}}Body"))
    if code not in codes or not body_el or body_el[0].tag != f"{{{XRD}}}{code}":
        return fault("Server.ServerProxy.UnknownService", f"no service {code}")
    instance = service.find(f"{{{ID}}}xRoadInstance").text
    member_class = service.find(f"{{{ID}}}memberClass").text
    member_code = service.find(f"{{{ID}}}memberCode").text
    services = "".join(
        f'<xrd:service id:objectType="SERVICE"><id:xRoadInstance>{instance}</id:xRoadInstance>'
        f"<id:memberClass>{member_class}</id:memberClass><id:memberCode>{member_code}</id:memberCode>"
        f"<id:serviceCode>{c}</id:serviceCode></xrd:service>"
        for c in codes[code]
    )
    # The provider copies the request's headers back.
    headers = ET.tostring(header, encoding="unicode")
    return (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP}" xmlns:xrd="{XRD}" xmlns:id="{ID}">'
        f"{headers}<SOAP-ENV:Body><xrd:{code}Response>{services}</xrd:{code}Response>"
        "</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            out = answer(body)
        except ET.ParseError as e:
            out = fault("Server.ClientProxy.InvalidSoap", str(e))
        data = out.encode()
        self.send_response(500 if "<faultcode>" in out else 200)
        self.send_header("Content-Type", "text/xml; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(client_ca)
ctx.verify_mode = ssl.CERT_REQUIRED
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
