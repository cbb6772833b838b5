"""A time-stamping authority made of `openssl ts -reply` (RFC 3161 over
HTTP: POST a TimeStampReq, get a TimeStampResp), the tests' independent
TSA. On first use it makes its own CA and TSA certificate with the
openssl command line (EC P-256; the TSA's extendedKeyUsage timeStamping,
critical, as RFC 3161 wants).

Usage: tsa.py WORKDIR PORT [USER:PASSWORD]
With USER:PASSWORD it asks for HTTP basic authentication (401 without).
Writes WORKDIR/ca.pem (the anchor to trust) and prints "listening" once
it serves. Every request it answered is appended to WORKDIR/served.log.

The path asked for picks a defect, each made by openssl itself from a
request edited before `openssl ts -reply` reads it (asn1crypto), or by
another TSA, or at another time:
  /                 an honest token
  /wrong-imprint    on another imprint (the request's, one bit changed)
  /other-ca         signed by a TSA of another CA (WORKDIR/other/ca.pem)
  /no-nonce         without a nonce
  /wrong-nonce      with another nonce
  /other-policy     under policy 1.2.3.4.5.6, not the one asked for
  /far-time         made two hours ahead of the clock (faketime)
"""

import base64
import http.server
import os
import subprocess
import sys
import tempfile

POLICY = "1.2.3.4.1"
OTHER_POLICY = "1.2.3.4.5.6"
MODES = ("/", "/wrong-imprint", "/other-ca", "/no-nonce", "/wrong-nonce", "/other-policy", "/far-time")


def edit(body, mode):
    """The request as a TSA with `mode`'s defect answers it."""
    if mode not in ("/wrong-imprint", "/no-nonce", "/wrong-nonce", "/other-policy"):
        return body
    from asn1crypto import tsp

    q = tsp.TimeStampReq.load(body)
    if mode == "/wrong-imprint":
        h = bytearray(q["message_imprint"]["hashed_message"].native)
        h[0] ^= 1
        q["message_imprint"]["hashed_message"] = bytes(h)
    elif mode == "/no-nonce":
        q["nonce"] = None
    elif mode == "/wrong-nonce":
        q["nonce"] = q["nonce"].native ^ 1
    elif mode == "/other-policy":
        q["req_policy"] = OTHER_POLICY
    return q.dump(force=True)


def run(*args):
    subprocess.run(args, check=True, capture_output=True)


def make_pki(d):
    os.makedirs(d, exist_ok=True)
    if os.path.exists(os.path.join(d, "tsa.pem")):
        return
    j = lambda n: os.path.join(d, n)  # noqa: E731
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", j("ca.key"))
    run(
        "openssl", "req", "-x509", "-new", "-key", j("ca.key"), "-subj", "/O=Test/CN=Test TSA CA",
        "-days", "30", "-out", j("ca.pem"),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", j("tsa.key"))
    run("openssl", "req", "-new", "-key", j("tsa.key"), "-subj", "/O=Test/CN=Test TSA", "-out", j("tsa.csr"))
    with open(j("ext.cnf"), "w") as f:
        f.write(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,nonRepudiation\n"
            "extendedKeyUsage=critical,timeStamping\n"
        )
    run(
        "openssl", "x509", "-req", "-in", j("tsa.csr"), "-CA", j("ca.pem"), "-CAkey", j("ca.key"),
        "-CAcreateserial", "-days", "30", "-extfile", j("ext.cnf"), "-out", j("tsa.pem"),
    )
    with open(j("serial"), "w") as f:
        f.write("01\n")
    with open(j("tsa.cnf"), "w") as f:
        f.write(
            f"""[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {d}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = {POLICY}
other_policies = {OTHER_POLICY}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""
        )


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        mode = self.path if self.path in MODES else None
        if mode is None:
            self.send_response(404)
            self.end_headers()
            return
        if self.server.auth:
            want = "Basic " + base64.b64encode(self.server.auth.encode()).decode()
            if self.headers.get("authorization") != want:
                self.send_response(401)
                self.send_header("www-authenticate", 'Basic realm="tsa"')
                self.end_headers()
                return
        d = self.server.workdir
        if mode == "/other-ca":
            d = os.path.join(d, "other")
        body = edit(body, mode)
        clock = ["faketime", "-f", "+2h"] if mode == "/far-time" else []
        with tempfile.TemporaryDirectory() as t:
            q, r = os.path.join(t, "q.tsq"), os.path.join(t, "r.tsr")
            with open(q, "wb") as f:
                f.write(body)
            p = subprocess.run(
                clock
                + ["openssl", "ts", "-reply", "-config", os.path.join(d, "tsa.cnf"), "-queryfile", q, "-out", r],
                capture_output=True,
            )
            if p.returncode != 0:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(p.stderr)
                return
            with open(r, "rb") as f:
                reply = f.read()
        with open(os.path.join(self.server.workdir, "served.log"), "a") as f:
            f.write("reply\n")
        self.send_response(200)
        self.send_header("content-type", "application/timestamp-reply")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    d, port = os.path.abspath(sys.argv[1]), int(sys.argv[2])
    os.makedirs(d, exist_ok=True)
    make_pki(d)
    make_pki(os.path.join(d, "other"))
    s = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    s.workdir = d
    s.auth = sys.argv[3] if len(sys.argv) > 3 else None
    print("listening", flush=True)
    s.serve_forever()


if __name__ == "__main__":
    main()
