//! Structure-aware mutations of well-formed XML, for property tests: a
//! random byte flip is refused by the tokenizer almost every time, so it
//! never exercises what reads a parsed tree. These edits keep a document
//! well-formed (text replaced, elements removed, repeated or wrapped) or
//! break it in one named way, so that the code behind the parser is reached.

use proptest::prelude::*;

/// Where elements and text nodes stand in a document, by byte range.
#[derive(Debug, Default)]
struct Spans {
    /// Elements below the root: (start, end, where the parent starts).
    elements: Vec<(usize, usize, usize)>,
    /// Text nodes inside elements.
    texts: Vec<(usize, usize)>,
}

fn spans(doc: &[u8]) -> Spans {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_reader(doc);
    r.config_mut().check_end_names = false;
    let mut out = Spans::default();
    let mut open: Vec<usize> = Vec::new();
    loop {
        let before = r.buffer_position() as usize;
        let ev = r.read_event();
        let after = r.buffer_position() as usize;
        match ev {
            Ok(Event::Start(_)) => open.push(before),
            Ok(Event::End(_)) => {
                if let Some(start) = open.pop() {
                    if let Some(&parent) = open.last() {
                        out.elements.push((start, after, parent));
                    }
                }
            }
            Ok(Event::Empty(_)) => {
                if let Some(&parent) = open.last() {
                    out.elements.push((before, after, parent))
                }
            }
            Ok(Event::Text(_)) if !open.is_empty() => out.texts.push((before, after)),
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// One edit, its positions as indexes into what the document holds.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace a text node (or insert text after an element) with `0`.
    Text(prop::sample::Index, String),
    /// Remove an element below the root, with everything in it.
    Remove(prop::sample::Index),
    /// Repeat an element right after itself.
    Repeat(prop::sample::Index),
    /// Wrap an element in an element of a namespace nobody knows.
    Wrap(prop::sample::Index),
    /// Move an element to just after a sibling (namespace declarations of
    /// the parent stay in scope).
    Move(prop::sample::Index, prop::sample::Index),
}

/// Text safe to put in element content: any printable characters, the
/// markup ones escaped.
fn text() -> impl Strategy<Value = String> {
    "[ -~\t\nčćšđžČĆŠĐŽЖю€\u{1F600}]{0,24}".prop_map(|s| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    })
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), text()).prop_map(|(i, t)| Edit::Text(i, t)),
        2 => any::<prop::sample::Index>().prop_map(Edit::Remove),
        2 => any::<prop::sample::Index>().prop_map(Edit::Repeat),
        1 => any::<prop::sample::Index>().prop_map(Edit::Wrap),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(a, b)| Edit::Move(a, b)),
    ]
}

/// `doc` with `e` applied; a well-formed document stays well-formed.
pub fn apply(doc: &[u8], e: &Edit) -> Vec<u8> {
    let s = spans(doc);
    let splice = |at: (usize, usize), with: &[u8]| -> Vec<u8> {
        [&doc[..at.0], with, &doc[at.1..]].concat()
    };
    match e {
        Edit::Text(i, t) if !s.texts.is_empty() => {
            splice(s.texts[i.index(s.texts.len())], t.as_bytes())
        }
        Edit::Text(i, t) if !s.elements.is_empty() => {
            let (_, end, _) = s.elements[i.index(s.elements.len())];
            splice((end, end), t.as_bytes())
        }
        _ if s.elements.is_empty() => doc.to_vec(),
        Edit::Remove(i) => {
            let (a, b, _) = s.elements[i.index(s.elements.len())];
            splice((a, b), b"")
        }
        Edit::Repeat(i) => {
            let (a, b, _) = s.elements[i.index(s.elements.len())];
            splice((b, b), &doc[a..b])
        }
        Edit::Wrap(i) => {
            let (a, b, _) = s.elements[i.index(s.elements.len())];
            let inner = [
                b"<w:x xmlns:w=\"urn:nobody\">" as &[u8],
                &doc[a..b],
                b"</w:x>",
            ]
            .concat();
            splice((a, b), &inner)
        }
        Edit::Move(i, j) => {
            let (a, b, parent) = s.elements[i.index(s.elements.len())];
            let peers: Vec<&(usize, usize, usize)> = s
                .elements
                .iter()
                .filter(|(c, d, p)| *p == parent && (*d <= a || *c >= b))
                .collect();
            if peers.is_empty() {
                return doc.to_vec();
            }
            let (_, to, _) = *peers[j.index(peers.len())];
            let moved = &doc[a..b];
            let mut out = Vec::with_capacity(doc.len());
            if to <= a {
                out.extend_from_slice(&doc[..to]);
                out.extend_from_slice(moved);
                out.extend_from_slice(&doc[to..a]);
                out.extend_from_slice(&doc[b..]);
            } else {
                out.extend_from_slice(&doc[..a]);
                out.extend_from_slice(&doc[b..to]);
                out.extend_from_slice(moved);
                out.extend_from_slice(&doc[to..]);
            }
            out
        }
        Edit::Text(..) => doc.to_vec(),
    }
}

/// `doc` with every edit applied in turn.
pub fn apply_all(doc: &[u8], edits: &[Edit]) -> Vec<u8> {
    edits.iter().fold(doc.to_vec(), |d, e| apply(&d, e))
}

/// Ways to break a well-formed document that a hostile peer would try,
/// each at a position chosen among the document's elements.
pub fn hostile() -> impl Strategy<Value = (prop::sample::Index, &'static str)> {
    (
        any::<prop::sample::Index>(),
        prop::sample::select(vec![
            "<!DOCTYPE r [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>",
            "&e;",
            "&#0;",
            "&#xD800;",
            "<u:x/>",
            "<a b=\"1\" b=\"2\"/>",
            "<a xmlns:p=\"\"/>",
            "<?xml version=\"1.0\"?>",
            "</w>",
            "\u{FFFE}",
            "<a:b:c/>",
            "<x xml:lang=\"sr\" xmlns:xml=\"urn:other\"/>",
        ]),
    )
}

/// `doc` with `what` inserted at the end of the chosen element.
pub fn insert(doc: &[u8], at: &prop::sample::Index, what: &str) -> Vec<u8> {
    let s = spans(doc);
    let pos = if s.elements.is_empty() {
        doc.len() / 2
    } else {
        s.elements[at.index(s.elements.len())].1
    };
    [&doc[..pos], what.as_bytes(), &doc[pos..]].concat()
}
