use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

use proptest::prelude::*;

use super::*;
use crate::lifecycle::{AttachmentRecord, SignedDocState, State};
use crate::store::SledStore;

const DOCUMENT: &[u8] = b"<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body><birthExtractResponse/></SOAP-ENV:Body></SOAP-ENV:Envelope>";

/// An ASiC-E as an X-Road security server writes one: `mimetype` first
/// and stored, the message, its attachments, a signature.
fn asice(message: &[u8], attachments: &[&[u8]], signature: bool) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default();
    z.start_file("mimetype", stored).unwrap();
    z.write_all(ASIC_MIMETYPE.as_bytes()).unwrap();
    z.start_file("message.xml", deflated).unwrap();
    z.write_all(message).unwrap();
    for (i, a) in attachments.iter().enumerate() {
        z.start_file(format!("attachment{}", i + 1), deflated)
            .unwrap();
        z.write_all(a).unwrap();
    }
    if signature {
        z.start_file("META-INF/signatures.xml", deflated).unwrap();
        z.write_all(b"<asic:XAdESSignatures xmlns:asic=\"http://uri.etsi.org/02918/v1.2.1#\"/>")
            .unwrap();
    }
    z.start_file("META-INF/manifest.xml", deflated).unwrap();
    z.write_all(b"<manifest:manifest/>").unwrap();
    z.finish().unwrap().into_inner()
}

/// A security server that answers from a script, and remembers what it
/// was asked.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Result<Fetched, String>>>,
    asked: Mutex<Vec<(String, String, bool)>>,
}

#[async_trait::async_trait]
impl SignedDocSource for Script {
    async fn fetch(
        &self,
        registry: &str,
        message_id: &str,
        force: bool,
    ) -> Result<Fetched, String> {
        self.asked
            .lock()
            .unwrap()
            .push((registry.into(), message_id.into(), force));
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err("the script is over".into()))
    }
}

fn policy(attempts: u32) -> Policy {
    Policy {
        interval: Duration::from_secs(1),
        batch: 16,
        attempts,
        // Tried again at once: each round finds it due.
        base: Duration::ZERO,
        cap: Duration::ZERO,
        force_after: Duration::from_secs(300),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn QueueStore>,
    cipher: Arc<DocumentCipher>,
    script: Arc<Script>,
    job: SignedDocs,
    id: String,
}

/// A fetched X-Road document (with `attachments`) whose signed document
/// came due `age_ms` ago, and the job over `answers`.
async fn fixture(
    attachments: &[&[u8]],
    age_ms: u64,
    attempts: u32,
    answers: Vec<Result<Fetched, String>>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn QueueStore> = SledStore::open(&dir.path().join("s"), 1 << 20).unwrap();
    let cipher = Arc::new(DocumentCipher::from_hex(&"ab".repeat(32)).unwrap());
    let mut r = crate::lifecycle::record::testing::record()
        .case("351-1/2026")
        .now(Duration::from_secs(86_400))
        .build();
    let now = store.clock_ms();
    r.state = State::Fetched;
    r.due_ms = None;
    r.document_id = Some(r.id.to_string());
    store
        .put_document(&r.id, &cipher.seal(&r.id, DOCUMENT).unwrap())
        .await
        .unwrap();
    for (i, a) in attachments.iter().enumerate() {
        let id = format!("{}.attachment-{}", r.id, i + 1);
        store
            .put_document(&id, &cipher.seal(&id, a).unwrap())
            .await
            .unwrap();
        r.attachments.push(AttachmentRecord {
            document_id: id,
            content_id: format!("a{i}"),
            content_type: "application/pdf".into(),
            name: None,
            size: a.len() as u64,
            sha256: crate::xml::dsig::hex(&openssl::sha::sha256(a)),
        });
    }
    let mut s = SignedDocRecord::pending("8f1b1c56-0d3a-4e3b-9d61-2f0ad4c3b0aa", now - age_ms);
    s.next_ms = Some(now);
    r.signed_document = Some(s);
    let id = r.id.to_string();
    store.enqueue(vec![r]).await.unwrap();
    let script = Arc::new(Script {
        answers: Mutex::new(answers.into()),
        ..Default::default()
    });
    let job = SignedDocs::with(
        policy(attempts),
        store.clone(),
        cipher.clone(),
        script.clone(),
    );
    Fixture {
        _dir: dir,
        store,
        cipher,
        script,
        job,
        id,
    }
}

impl Fixture {
    async fn signed(&self) -> SignedDocRecord {
        let r = self.store.get(&self.id).await.unwrap().unwrap();
        r.signed_document.unwrap()
    }
    async fn kept(&self) -> Option<Vec<u8>> {
        let id = document_id(&self.id);
        let sealed = self.store.document(&id).await.unwrap()?;
        Some(self.cipher.open(&id, &sealed).unwrap())
    }
    fn asked(&self) -> Vec<(String, String, bool)> {
        self.script.asked.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_404_is_tried_again_and_then_the_container_is_kept() {
    let genuine = asice(DOCUMENT, &[], true);
    let f = fixture(
        &[],
        0,
        5,
        vec![
            Ok(Fetched::NotYet(
                "Message signature has not been timestamped yet!".into(),
            )),
            Ok(Fetched::Container(genuine.clone())),
        ],
    )
    .await;
    assert_eq!(f.job.round().await.unwrap(), 1);
    let s = f.signed().await;
    assert_eq!((s.state, s.tries), (SignedDocState::Pending, 1));
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("not timestamped yet: Message signature has not been timestamped yet!"),
        "{s:?}"
    );
    assert!(f.kept().await.is_none());
    // Still in the index: found again.
    assert_eq!(f.job.round().await.unwrap(), 1);
    let s = f.signed().await;
    assert_eq!((s.state, s.tries), (SignedDocState::Kept, 2), "{s:?}");
    assert_eq!(s.document_id.as_deref(), Some(document_id(&f.id).as_str()));
    assert_eq!(
        s.sha256.as_deref(),
        Some(crate::xml::dsig::hex(&openssl::sha::sha256(&genuine)).as_str())
    );
    assert_eq!(f.kept().await.as_deref(), Some(genuine.as_slice()));
    // Asked by the registry and the message id, without force (it is new).
    let asked = f.asked();
    assert_eq!(asked.len(), 2);
    assert!(asked.iter().all(|a| a
        == &(
            "civil".into(),
            "8f1b1c56-0d3a-4e3b-9d61-2f0ad4c3b0aa".into(),
            false
        )));
    // Nothing more to do: out of the index.
    assert_eq!(f.job.round().await.unwrap(), 0);
    assert!(f
        .store
        .evidence_due(u64::MAX >> 1, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_signed_document_of_another_message_is_refused_and_tried_again() {
    let other = b"<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body><otherResponse/></SOAP-ENV:Body></SOAP-ENV:Envelope>";
    let genuine = asice(DOCUMENT, &[], true);
    let f = fixture(
        &[],
        0,
        5,
        vec![
            Ok(Fetched::Container(asice(other, &[], true))),
            Ok(Fetched::Container(genuine.clone())),
        ],
    )
    .await;
    f.job.round().await.unwrap();
    let s = f.signed().await;
    assert_eq!(s.state, SignedDocState::Pending);
    let reason = s.reason.unwrap();
    assert!(
        reason.contains("the signed document is refused: its message.xml")
            && reason.contains("is not the document"),
        "{reason}"
    );
    assert!(f.kept().await.is_none(), "a refused container is not kept");
    f.job.round().await.unwrap();
    assert_eq!(f.signed().await.state, SignedDocState::Kept);
    assert_eq!(f.kept().await.unwrap(), genuine);
}

#[tokio::test]
async fn attachments_must_be_the_documents_attachments() {
    let (a1, a2): (&[u8], &[u8]) = (b"%PDF-1.7 one", b"%PDF-1.7 two");
    let f = fixture(
        &[a1, a2],
        0,
        5,
        vec![
            Ok(Fetched::Container(asice(DOCUMENT, &[a2, a1], true))),
            Ok(Fetched::Container(asice(DOCUMENT, &[a1], true))),
            Ok(Fetched::Container(asice(DOCUMENT, &[a1, a2], true))),
        ],
    )
    .await;
    f.job.round().await.unwrap();
    let s = f.signed().await;
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("its attachment1 is not the document's attachment 1"),
        "{s:?}"
    );
    f.job.round().await.unwrap();
    let s = f.signed().await;
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("it has 1 attachment entries (attachment1..), the document 2 attachments"),
        "{s:?}"
    );
    f.job.round().await.unwrap();
    assert_eq!(f.signed().await.state, SignedDocState::Kept);
}

#[tokio::test]
async fn the_security_server_is_asked_to_force_once_the_document_is_older_than_the_while() {
    let f = fixture(
        &[],
        301_000,
        5,
        vec![Ok(Fetched::Container(asice(DOCUMENT, &[], true)))],
    )
    .await;
    f.job.round().await.unwrap();
    assert!(
        f.asked()[0].2,
        "past evidence.signed_document_force_after: force"
    );
    assert_eq!(f.signed().await.state, SignedDocState::Kept);
    let young = fixture(&[], 299_000, 5, vec![Ok(Fetched::NotYet("not yet".into()))]).await;
    young.job.round().await.unwrap();
    assert!(!young.asked()[0].2, "within the while: no force");
}

#[tokio::test]
async fn a_signed_document_is_given_up_after_the_attempts() {
    let f = fixture(
        &[],
        0,
        3,
        vec![
            Ok(Fetched::NotYet("not yet".into())),
            Err("HTTP 500: internal error".into()),
            Ok(Fetched::Container(asice(DOCUMENT, &[], false))),
            Ok(Fetched::Container(asice(DOCUMENT, &[], true))),
        ],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(f.job.round().await.unwrap(), 1);
    }
    let s = f.signed().await;
    assert_eq!(
        (s.state, s.tries, s.next_ms),
        (SignedDocState::Failed, 3, None)
    );
    assert_eq!(
        s.reason.as_deref(),
        Some("given up after 3 tries: the signed document is refused: it has no signature (META-INF/*signatures*.xml)")
    );
    // Not asked for again: out of the index.
    assert_eq!(f.job.round().await.unwrap(), 0);
    assert_eq!(f.asked().len(), 3);
    assert!(f.kept().await.is_none());
}

#[tokio::test]
async fn the_job_leaves_timestamps_to_the_stamper_and_they_share_the_index() {
    let f = fixture(&[], 0, 5, vec![Ok(Fetched::NotYet("not yet".into()))]).await;
    // A timestamp due later than the signed document: the record is in
    // the index by the earlier of the two.
    let now = f.store.clock_ms();
    let later = now + 3_600_000;
    f.store
        .update(&f.id, &|r: &mut RequestRecord| {
            r.stamp = Some(crate::lifecycle::StampRecord::pending(later));
            true
        })
        .await
        .unwrap();
    let due = f.store.evidence_due(now, 10).await.unwrap();
    assert_eq!(due.len(), 1, "due by its signed document");
    f.job.round().await.unwrap();
    // Both later now: due by neither at `now`; by the timestamp at `later`.
    let mut p = policy(5);
    p.base = Duration::from_secs(7_200);
    p.cap = Duration::from_secs(7_200);
    let job = SignedDocs::with(p, f.store.clone(), f.cipher.clone(), f.script.clone());
    f.script
        .answers
        .lock()
        .unwrap()
        .push_back(Ok(Fetched::NotYet("not yet".into())));
    job.round().await.unwrap();
    let r = f.store.get(&f.id).await.unwrap().unwrap();
    let next = r.signed_document.as_ref().unwrap().next_ms.unwrap();
    assert!(next > later, "{next} {later}");
    assert_eq!(r.evidence_due_ms(), Some(later));
    assert!(f
        .store
        .evidence_due(later - 1, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(f.store.evidence_due(later, 10).await.unwrap().len(), 1);
    // The signed-document job takes nothing that is only due for its
    // timestamp.
    assert_eq!(job.round().await.unwrap(), 0);
}

#[test]
fn bind_refuses_what_is_not_the_documents_signed_document() {
    let genuine = asice(DOCUMENT, &[], true);
    assert!(bind(&genuine, DOCUMENT, None, &[]).unwrap().signatures == ["META-INF/signatures.xml"]);
    let refused = |c: &[u8]| bind(c, DOCUMENT, None, &[]).unwrap_err().to_string();
    // Another mimetype.
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default();
    z.start_file("mimetype", o).unwrap();
    z.write_all(b"application/vnd.etsi.asic-s+zip").unwrap();
    z.start_file("message.xml", o).unwrap();
    z.write_all(DOCUMENT).unwrap();
    let asics = z.finish().unwrap().into_inner();
    assert_eq!(
        refused(&asics),
        "its mimetype is \"application/vnd.etsi.asic-s+zip\", not application/vnd.etsi.asic-e+zip"
    );
    assert!(refused(b"PK\x05\x06 not a zip").starts_with("not a readable ASiC-E container: "));
    // One byte more in the message.
    let mut longer = DOCUMENT.to_vec();
    longer.push(b'\n');
    assert!(refused(&asice(&longer, &[], true)).contains("is not the document"));
    // An attachment the document did not have.
    assert_eq!(
        refused(&asice(DOCUMENT, &[b"x"], true)),
        "it has 1 attachment entries (attachment1..), the document 0 attachments"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any change of one byte of the message is refused; the genuine
    /// message holds.
    #[test]
    fn any_changed_byte_of_the_message_is_refused(at in 0usize..DOCUMENT.len(), x in 1u8..=255) {
        let mut m = DOCUMENT.to_vec();
        m[at] ^= x;
        let e = bind(&asice(&m, &[], true), DOCUMENT, None, &[]).unwrap_err();
        prop_assert!(matches!(e, BindingError::MessageDiffers { .. }), "{e}");
        prop_assert!(bind(&asice(DOCUMENT, &[], true), DOCUMENT, None, &[]).is_ok());
    }

    /// Whatever bytes come, the reading ends in a refusal or a binding,
    /// never a panic.
    #[test]
    fn arbitrary_bytes_are_refused_cleanly(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(bind(&b, DOCUMENT, None, &[]).is_err());
    }
}

/// NIIS's security server logs a message's text written as UTF-8 (its
/// message.xml of an ISO-8859-1 answer is not the bytes received), and a
/// server that logs no bodies leaves the attachments out: both are the
/// signed document of the document all the same; anything else is not.
#[test]
fn bind_takes_the_message_as_a_security_server_logs_it() {
    // An answer in ISO-8859-1, its charset named by HTTP alone.
    let text = "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body><x>Erzsébet Đorđe</x></SOAP-ENV:Body></SOAP-ENV:Envelope>";
    let latin1: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect();
    assert_ne!(latin1, text.as_bytes());
    let logged = crate::protocol::xroad::logged_text(&latin1, Some("ISO-8859-1")).unwrap();
    let b = bind(&asice(&logged, &[], true), &latin1, Some("ISO-8859-1"), &[]).unwrap();
    assert!(b.message_as_text && b.attachments_logged);
    // The bytes themselves still hold, and say so.
    let b = bind(&asice(&latin1, &[], true), &latin1, Some("ISO-8859-1"), &[]).unwrap();
    assert!(!b.message_as_text);
    // Another text is another message, however it is written.
    let other = logged_other(&logged);
    let e = bind(&asice(&other, &[], true), &latin1, Some("ISO-8859-1"), &[]).unwrap_err();
    assert!(e.to_string().contains("is not the document"), "{e}");
    // Read by the wrong charset (none: UTF-8), the logged text is not it.
    assert!(bind(&asice(&logged, &[], true), &latin1, None, &[]).is_err());
    // Attachments: none logged is taken and said; logged, they must be
    // the document's.
    let pdf: &[u8] = b"%PDF-1.4 scan";
    let d = [Digest::of(pdf)];
    let b = bind(&asice(DOCUMENT, &[], true), DOCUMENT, None, &d).unwrap();
    assert!(!b.attachments_logged);
    assert!(
        bind(&asice(DOCUMENT, &[pdf], true), DOCUMENT, None, &d)
            .unwrap()
            .attachments_logged
    );
    assert_eq!(
        bind(
            &asice(DOCUMENT, &[b"%PDF-1.4 other"], true),
            DOCUMENT,
            None,
            &d
        )
        .unwrap_err()
        .to_string(),
        "its attachment1 is not the document's attachment 1"
    );
}

/// `logged` with one letter changed.
fn logged_other(logged: &[u8]) -> Vec<u8> {
    let s = String::from_utf8(logged.to_vec()).unwrap();
    s.replace("Erzsébet", "Erzsebet").into_bytes()
}

/// Records due only for a timestamp that no job takes (the TSA removed
/// from the configuration) fill the head of the shared evidence index:
/// the signed-document job reads past them, and so does the stamper past
/// signed documents no job takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_kind_stuck_at_the_head_of_the_index_starves_not_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn QueueStore> = SledStore::open(&dir.path().join("s"), 1 << 20).unwrap();
    let rec = |n: u64| {
        let mut r = crate::lifecycle::record::testing::record()
            .case(format!("351-{n}/2026"))
            .subject(&[])
            .now(Duration::from_secs(86_400))
            .build();
        r.state = State::Fetched;
        r.due_ms = None;
        r
    };
    let mut recs = Vec::new();
    for n in 0..40 {
        let mut r = rec(n);
        let mut s = crate::lifecycle::StampRecord::pending(1);
        s.next_ms = Some(1 + n);
        r.stamp = Some(s);
        recs.push(r);
    }
    let mut signed = rec(100);
    signed.signed_document = Some(SignedDocRecord::pending("m-1", 500));
    let wanted = signed.id.clone();
    recs.push(signed);
    let mut late_stamp = rec(101);
    late_stamp.stamp = Some(crate::lifecycle::StampRecord::pending(600));
    let stamp_id = late_stamp.id.clone();
    recs.push(late_stamp);
    for n in 0..40 {
        let mut r = rec(200 + n);
        r.signed_document = Some(SignedDocRecord::pending("m", 2 + n));
        recs.push(r);
    }
    store.enqueue(recs).await.unwrap();
    let now = 1_000;
    // The control: a batch of the index's head holds no signed document
    // due after the stuck timestamps.
    let head = store.evidence_due(now, 5).await.unwrap();
    assert!(head.iter().all(|r| r.id != wanted));
    let signed_due = |r: &RequestRecord| {
        r.signed_document
            .as_ref()
            .is_some_and(|s| s.is_pending() && s.next_ms.unwrap_or(0) <= now)
            && r.id == wanted
    };
    let got = crate::evidence::due_of(&*store, now, 5, signed_due)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [wanted.as_str()]
    );
    let stamp_due = |r: &RequestRecord| r.id == stamp_id && r.stamp_pending();
    let got = crate::evidence::due_of(&*store, now, 5, stamp_due)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // A batch is filled from the earliest of its own kind.
    let any_signed = |r: &RequestRecord| r.signed_document.as_ref().is_some_and(|s| s.is_pending());
    let got = crate::evidence::due_of(&*store, now, 5, any_signed)
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
    assert!(got
        .iter()
        .all(|r| r.signed_document.as_ref().unwrap().next_ms.unwrap() < 500));
}
