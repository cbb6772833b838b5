//! Criterion micro-benchmarks of the hot paths, so that a regression shows
//! up as a number: exclusive C14N (small and large), sign, verify,
//! envelope build and parse, identifier checks, durable store enqueue.
//! `cargo bench --bench hot_paths`; BENCHMARKS.md has the ratios against
//! raw openssl and libxmlsec1/lxml from `jumgw bench xml`.

#![allow(clippy::unwrap_used)] // benchmarks: a panic is the failure report

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jum_gateway::bench::xml::{large_document, small_envelope};
use jum_gateway::config::Member;
use jum_gateway::pki::{CertSpec, Issued, KeyKind, Role};
use jum_gateway::protocol::envelope::{self, Headers};
use jum_gateway::xml::{self, c14n, Limits};

fn member(code: &str, sub: &str) -> Member {
    Member {
        instance: "RS".into(),
        class: "GOV".into(),
        code: code.into(),
        subsystem: Some(sub.into()),
    }
}

fn xml_paths(c: &mut Criterion) {
    let limits = Limits::default();
    let ca = Issued::new(&CertSpec::new("bench CA", Role::Ca), KeyKind::EcP256, None).unwrap();
    let mut g = c.benchmark_group("xml");
    for (name, kind) in [("rsa", KeyKind::Rsa2048), ("ecdsa", KeyKind::EcP256)] {
        let signer = Issued::new(
            &CertSpec::new("bench signer", Role::Signing),
            kind,
            Some(&ca),
        )
        .unwrap();
        let key = xml::SigningKey::from_pem(
            &signer.key_pem().unwrap(),
            &signer.cert_pem().unwrap(),
            None,
        )
        .unwrap();
        let trust = xml::TrustStore::from_pem(&ca.cert_pem().unwrap()).unwrap();
        let small = small_envelope();
        let signed = xml::sign(small.as_bytes(), &key, &limits).unwrap();
        g.bench_function(format!("sign_small_{name}"), |b| {
            b.iter(|| xml::sign(black_box(small.as_bytes()), &key, &limits).unwrap())
        });
        g.bench_function(format!("verify_small_{name}"), |b| {
            b.iter(|| xml::verify(black_box(&signed), &trust, &limits).unwrap())
        });
    }
    let opts = c14n::Options::exclusive();
    let small = small_envelope();
    let large = large_document(200 * 1024);
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("exc_c14n_small", |b| {
        b.iter(|| c14n::canonicalize(black_box(small.as_bytes()), &opts, &limits).unwrap())
    });
    g.throughput(Throughput::Bytes(large.len() as u64));
    g.bench_function("exc_c14n_200k", |b| {
        b.iter(|| c14n::canonicalize(black_box(large.as_bytes()), &opts, &limits).unwrap())
    });
    g.finish();
}

fn envelope_paths(c: &mut Criterion) {
    let h = Headers {
        client: member("08070431", "jum-becej"),
        service: member("17211226", "katastar"),
        service_code: "PropertySheet".into(),
        service_version: "v1".into(),
        id: "01JDQ8Z5X3T4V6W7Y8Z9A0B1C2".into(),
        user_id: "marija.kovac".into(),
        issue: "351-12/2026-IV".into(),
        legal_basis: "ZUP čl. 103".into(),
        purpose: "building permit".into(),
    };
    let payload = r#"<k:PropertySheetRequest xmlns:k="urn:jum-gateway:cadastre:1"><k:ko>803472</k:ko><k:sheet>1520</k:sheet></k:PropertySheetRequest>"#;
    let built = envelope::request(&h, payload);
    let limits = Limits::default();
    let mut g = c.benchmark_group("envelope");
    g.bench_function("build", |b| {
        b.iter(|| envelope::request(black_box(&h), payload))
    });
    g.bench_function("parse", |b| {
        b.iter(|| {
            let doc = xml::Document::parse(black_box(built.as_bytes()), &limits).unwrap();
            envelope::read(&doc).map(drop).unwrap()
        })
    });
    g.finish();
}

fn identifiers(c: &mut Criterion) {
    let mut g = c.benchmark_group("ids");
    g.bench_function("jmbg", |b| {
        b.iter(|| jum_gateway::ids::Jmbg::parse(black_box("0512981717776")).unwrap())
    });
    g.bench_function("pib", |b| {
        b.iter(|| jum_gateway::ids::Pib::parse(black_box("101134702")).unwrap())
    });
    g.bench_function("redact_text", |b| {
        b.iter(|| {
            jum_gateway::ids::redact_text(black_box("no entry for 0512981717776 in KO 803472"))
        })
    });
    g.finish();
}

fn store_enqueue(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(async { jum_gateway::store::SledStore::open(&dir.path().join("s"), 64 << 20) })
        .unwrap();
    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    // One durable accept, alone (the latency of a flush); the API batches
    // concurrent ones into one flush.
    g.bench_function("enqueue_one_durable", |b| {
        b.iter_batched(
            || {
                jum_gateway::lifecycle::record::testing::record()
                    .client("bench")
                    .case("351-12/2026-IV")
                    .now(std::time::Duration::from_secs(86_400))
                    .build()
            },
            |r| {
                use jum_gateway::store::Requests;
                rt.block_on(store.enqueue(vec![r])).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    xml_paths,
    envelope_paths,
    identifiers,
    store_enqueue
);
criterion_main!(benches);
