#!/usr/bin/env python3
"""Where one exchange's milliseconds go: sorts the samples of a profile of
the gateway (perf record --call-graph dwarf -p <gateway>, during
`jumgw bench e2e`) into the stages of BENCHMARKS.md's cost model.

    perf script --no-inline -F tid,ip,sym,dso -i perf.data > samples.txt
    python3 benches/cost_model.py samples.txt <cpu ms per exchange of that run>

(`-` for the file reads the samples from standard input.)

Each sample goes to the first stage whose pattern matches a function on
its stack, in the order below (so the signature made while signing a
request counts as our signature, a certificate parsed while checking a
token as timestamps). The shares are turned into milliseconds with the
CPU per exchange the run measured (`cpu_ms_per_exchange_gateway`).
"""
import collections
import re
import sys

STAGES = [
    ("our signature (private key)", r"SigningKey::sign_bytes"),
    ("evidence job: timestamps", r"jum_gateway::evidence::"),
    ("answer: its signature value", r"verify::check_signature_value"),
    ("answer: signer's chain, anchor, issuer, revocation",
     r"SignerSeen::of|dsig::trust::|pki::revocation|dsig::names::cert_sha256|offered_certificates"),
    ("answer: schema validation", r"xml::schema|xmlSchema"),
    ("answer: parse, C14N, digests", r"xml::dsig::verify|xml::dom::Document::parse"),
    ("request: envelope, C14N, digest", r"xml::dsig::sign|protocol::envelope::build|Exchange::build|envelope::"),
    ("store: accepts (group commit)", r"embedded::commit::"),
    ("store: transitions", r"embedded::change::update_batch_now"),
    ("store: records read for a change", r"embedded::change::change_many|get_many"),
    ("store: leases", r"lease_many|embedded::requests::lease"),
    ("store: due index and queue reads", r"embedded::requests::|embedded::facade::"),
    ("store: documents", r"embedded::documents|DocumentCipher"),
    ("case folders", r"delivery::|dispatch::folder"),
    ("sled in the background", r"sled::"),
    ("TLS and the API's accept loop", r"rustls|openssl::ssl|SslStream|SSL_|pki::tls"),
    ("API accept handler", r"jum_gateway::api::"),
    ("HTTP (hyper, axum, reqwest)", r"hyper::|axum::|reqwest::|h2::|tower::"),
    ("exchange: the rest of send and receive", r"jum_gateway::exchange::"),
    ("dispatcher", r"jum_gateway::dispatch::"),
    ("metrics, logs", r"metrics::|tracing|log::"),
    ("runtime: wake-ups, thread switches", r"tokio::runtime|std::thread|start_thread|clone3"),
]


def samples(path):
    """The stacks of `perf script` output, leaf first, as (symbol, dso)."""
    stack = []
    lines = sys.stdin if path == "-" else open(path, errors="replace")
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        if not line.startswith("\t"):
            stack = []
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) < 2:
            continue
        m = re.match(r"(.*) \((.*)\)$", parts[1])
        stack.append((m.group(1), m.group(2)) if m else (parts[1], ""))
    if stack:
        yield stack


def plain(sym):
    # `<impl Foo for Bar>::f` reads as `f` under its module path.
    return re.sub(r"<impl [^<>]*(<[^<>]*>)?[^<>]*>::", "", sym)


def stage(stack):
    for name, pattern in STAGES:
        if any(re.search(pattern, plain(s)) for s, _ in stack):
            return name
    return "other"


def main():
    path, ms = sys.argv[1], float(sys.argv[2])
    counts = collections.Counter(stage(s) for s in samples(path))
    total = sum(counts.values()) or 1
    print("| stage | ms per exchange | share |\n|---|---:|---:|")
    for name, _ in STAGES + [("other", "")]:
        n = counts.get(name, 0)
        print(f"| {name} | {ms * n / total:.3f} | {100 * n / total:.1f} % |")
    print(f"| all ({total} samples) | {ms:.2f} | |")


if __name__ == "__main__":
    main()
