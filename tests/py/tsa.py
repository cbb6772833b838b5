"""A time-stamping authority made of `openssl ts -reply` (RFC 3161 over
HTTP: POST a TimeStampReq, get a TimeStampResp), the tests' independent
TSA. On first use it makes its own CA and TSA certificate with the
openssl command line (EC P-256; the TSA's extendedKeyUsage timeStamping,
critical, as RFC 3161 wants).

Usage: tsa.py WORKDIR PORT [USER:PASSWORD]
With USER:PASSWORD it asks for HTTP basic authentication (401 without).
Writes WORKDIR/ca.pem (the anchor to trust) and prints "listening" once
it serves. Every request it answered is appended to WORKDIR/served.log.
"""

import base64
import http.server
import os
import subprocess
import sys
import tempfile

POLICY = "1.2.3.4.1"


def run(*args):
    subprocess.run(args, check=True, capture_output=True)


def make_pki(d):
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
other_policies = 1.2.3.4.5.6
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
        if self.server.auth:
            want = "Basic " + base64.b64encode(self.server.auth.encode()).decode()
            if self.headers.get("authorization") != want:
                self.send_response(401)
                self.send_header("www-authenticate", 'Basic realm="tsa"')
                self.end_headers()
                return
        d = self.server.workdir
        with tempfile.TemporaryDirectory() as t:
            q, r = os.path.join(t, "q.tsq"), os.path.join(t, "r.tsr")
            with open(q, "wb") as f:
                f.write(body)
            p = subprocess.run(
                ["openssl", "ts", "-reply", "-config", os.path.join(d, "tsa.cnf"), "-queryfile", q, "-out", r],
                capture_output=True,
            )
            if p.returncode != 0:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(p.stderr)
                return
            with open(r, "rb") as f:
                reply = f.read()
        with open(os.path.join(d, "served.log"), "a") as f:
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
    s = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    s.workdir = d
    s.auth = sys.argv[3] if len(sys.argv) > 3 else None
    print("listening", flush=True)
    s.serve_forever()


if __name__ == "__main__":
    main()
