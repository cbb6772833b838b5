"""An OCSP responder and CRL issuer made with Python `cryptography` (not
our code), honest or hostile by the path it is asked on. The tests' own
independent implementation of RFC 6960 and RFC 5280 section 5.

Usage: ocsp_responder.py CA_CERT CA_KEY PORT [--revoked CERT]... [--victim CERT]

POST (OCSP, any of these paths) and GET:
  /fresh              thisUpdate now, nextUpdate in an hour, our nonce back
  /replay             400 days old, no nonce, no nextUpdate (a replay)
  /old                400 days old, our nonce back, no nextUpdate
  /delegated          signed by a responder the CA issued with
                      id-kp-OCSPSigning, valid now
  /delegated-expired  the same, its certificate expired in 2021
  /unauthorised       signed by a certificate the CA issued, valid now,
                      but not for OCSP (no id-kp-OCSPSigning)
  /foreign            signed by a responder of another CA (with
                      id-kp-OCSPSigning, from that CA)
  /wrong-nonce        fresh, but our nonce with its last bit changed
  /redirect/PORT      307 to http://127.0.0.1:PORT/fresh
  /huge               200 with Content-Length 1 GB, zeros for as long as read
  /chunked            200 chunked, up to 2 GB of zeros for as long as read
GET only:
  /crl-undated        a v1 CRL without nextUpdate, thisUpdate 2 hours ago
                      (asn1crypto, signed with the CA's key)

With --victim, only that certificate gets the hostile answer; any other
(a registry's TLS certificate, say) gets a fresh one. Prints "listening"
once it serves.
"""

import datetime
import http.server
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

args = sys.argv[1:]
CA = x509.load_pem_x509_certificate(open(args[0], "rb").read())
CA_KEY = serialization.load_pem_private_key(open(args[1], "rb").read(), password=None)
PORT = int(args[2])
REVOKED = set()
VICTIM = None
i = 3
while i < len(args):
    cert = x509.load_pem_x509_certificate(open(args[i + 1], "rb").read())
    if args[i] == "--revoked":
        REVOKED.add(cert.serial_number)
    elif args[i] == "--victim":
        VICTIM = cert.serial_number
    i += 2

NOW = lambda: datetime.datetime.now(datetime.timezone.utc)  # noqa: E731


def delegated(not_before, not_after, name="delegated OCSP responder", usage=True, ca=None):
    ca_name, ca_key = ca if ca is not None else (CA.subject, CA_KEY)
    key = ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def other_ca():
    """A CA of its own (name and key): not the one the tests trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")]), key


utc = datetime.timezone.utc
RESPONDERS = {
    "/delegated": delegated(NOW() - datetime.timedelta(days=1), NOW() + datetime.timedelta(days=30)),
    "/delegated-expired": delegated(datetime.datetime(2020, 1, 1, tzinfo=utc), datetime.datetime(2021, 6, 30, tzinfo=utc)),
    "/unauthorised": delegated(
        NOW() - datetime.timedelta(days=1), NOW() + datetime.timedelta(days=30), "not an OCSP responder", usage=False
    ),
    "/foreign": delegated(
        NOW() - datetime.timedelta(days=1), NOW() + datetime.timedelta(days=30), "foreign OCSP responder", ca=other_ca()
    ),
}


def answer(mode, der):
    req = ocsp.load_der_ocsp_request(der)
    try:
        nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        nonce = None
    if VICTIM is not None and req.serial_number != VICTIM:
        mode = "/fresh"
    this, nxt = NOW(), NOW() + datetime.timedelta(hours=1)
    if mode in ("/replay", "/old"):
        this, nxt = NOW() - datetime.timedelta(days=400), None
    if mode == "/replay":
        nonce = None
    if mode == "/wrong-nonce" and nonce is not None:
        nonce = nonce[:-1] + bytes([nonce[-1] ^ 1])
    if req.serial_number in REVOKED:
        status, at, reason = ocsp.OCSPCertStatus.REVOKED, NOW() - datetime.timedelta(days=1), x509.ReasonFlags.key_compromise
    else:
        status, at, reason = ocsp.OCSPCertStatus.GOOD, None, None
    b = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=req.issuer_name_hash,
        issuer_key_hash=req.issuer_key_hash,
        serial_number=req.serial_number,
        algorithm=req.hash_algorithm,
        cert_status=status,
        this_update=this,
        next_update=nxt,
        revocation_time=at,
        revocation_reason=reason,
    )
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    cert, key = RESPONDERS.get(mode, (CA, CA_KEY))
    b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
    if cert is not CA:
        b = b.certificates([cert])
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def undated_crl():
    from asn1crypto import algos, core, crl, x509 as ax509

    ec_key = isinstance(CA_KEY, ec.EllipticCurvePrivateKey)
    alg = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa" if ec_key else "sha256_rsa"})
    tbs = crl.TbsCertList(
        {
            "signature": alg,
            "issuer": ax509.Name.load(CA.subject.public_bytes()),
            "this_update": ax509.Time({"utc_time": NOW() - datetime.timedelta(hours=2)}),
        }
    )
    data = tbs.dump()
    if ec_key:
        sig = CA_KEY.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        from cryptography.hazmat.primitives.asymmetric import padding

        sig = CA_KEY.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return crl.CertificateList({"tbs_cert_list": tbs, "signature_algorithm": alg, "signature": sig}).dump()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, body, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def flood(self):
        block = b"\0" * (1 << 20)
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        if self.path == "/huge":
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            chunks = 1 << 10
            frame = lambda b: b  # noqa: E731
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunks = 2 << 10
            frame = lambda b: b"%x\r\n" % len(b) + b + b"\r\n"  # noqa: E731
        try:
            for _ in range(chunks):
                self.wfile.write(frame(block))
            if self.path == "/chunked":
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading: what it should do
        self.close_connection = True

    def route(self, body):
        spared = False
        if body is not None and VICTIM is not None and self.path.startswith("/redirect/"):
            spared = ocsp.load_der_ocsp_request(body).serial_number != VICTIM
        if spared:
            self.send(answer("/fresh", body), "application/ocsp-response")
        elif self.path.startswith("/redirect/"):
            port = self.path.rsplit("/", 1)[1]
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{port}/fresh")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path in ("/huge", "/chunked"):
            self.flood()
        elif self.path == "/crl-undated":
            self.send(undated_crl(), "application/pkix-crl")
        elif body is not None:
            self.send(answer(self.path, body), "application/ocsp-response")
        else:
            self.send_error(404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.route(self.rfile.read(n))

    def do_GET(self):
        self.route(None)


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("listening", flush=True)
server.serve_forever()
