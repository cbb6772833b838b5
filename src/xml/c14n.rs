//! Canonical XML: Exclusive XML Canonicalization 1.0
//! (<https://www.w3.org/TR/xml-exc-c14n/>), with and without comments and
//! with an `InclusiveNamespaces PrefixList`, and inclusive Canonical XML 1.0
//! (<https://www.w3.org/TR/xml-c14n/>) for whole documents.
//!
//! It is a [`Sink`]: fed straight from the hardened reader it streams a
//! document without building a tree; fed from a [`crate::xml::dom::Document`]
//! it canonicalises a subtree or the document minus one subtree (the
//! enveloped-signature transform). Output goes to anything implementing
//! [`Output`]: a `Vec<u8>`, a SHA-256 context, or a writer.
//!
//! Not supported: XPath node-sets other than "subtree" and "document minus a
//! subtree"; inclusive C14N of a subset (its `xml:*` attribute inheritance),
//! which the wire protocol never needs; C14N 1.1.

use std::io::Write;

use smallvec::SmallVec;

use super::reader::{parse, Attr, Element, Limits, Sink, XmlError};

/// Where canonical bytes go.
pub trait Output {
    fn put(&mut self, bytes: &[u8]);
}

impl Output for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Output for openssl::sha::Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// A writer that remembers its first error instead of failing every call.
pub struct WriteOutput<W: Write> {
    pub inner: W,
    pub error: Option<std::io::Error>,
}

impl<W: Write> Output for WriteOutput<W> {
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.inner.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }
}

/// Which canonicalisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Exclusive (true) or inclusive C14N 1.0.
    pub exclusive: bool,
    pub with_comments: bool,
    /// `InclusiveNamespaces PrefixList` of exclusive C14N; `""` stands for
    /// `#default`.
    pub inclusive_prefixes: Vec<String>,
}

impl Options {
    pub fn exclusive() -> Options {
        Options {
            exclusive: true,
            ..Options::default()
        }
    }

    /// Parses a PrefixList attribute value (`"bar #default"`).
    pub fn with_prefix_list(mut self, list: &str) -> Options {
        self.inclusive_prefixes = list
            .split_ascii_whitespace()
            .map(|p| {
                if p == "#default" {
                    String::new()
                } else {
                    p.to_owned()
                }
            })
            .collect();
        self
    }
}

/// Bytes produced by the canonicaliser and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical(Vec<u8>);

impl Canonical {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Canonicalises a whole document held in memory.
pub fn canonicalize(input: &[u8], opts: &Options, limits: &Limits) -> Result<Canonical, XmlError> {
    let mut c = Canonicalizer::new(Vec::with_capacity(input.len()), opts);
    parse(input, limits, &mut c)?;
    Ok(Canonical(c.finish()))
}

/// Canonicalises a document into any output, streaming.
pub fn canonicalize_into<O: Output>(
    input: &[u8],
    opts: &Options,
    limits: &Limits,
    out: O,
) -> Result<O, XmlError> {
    let mut c = Canonicalizer::new(out, opts);
    parse(input, limits, &mut c)?;
    Ok(c.finish())
}

/// A namespace binding stack with scope marks.
#[derive(Default)]
struct NsStack {
    items: Vec<(String, String)>,
    marks: Vec<usize>,
}

impl NsStack {
    fn open(&mut self) {
        self.marks.push(self.items.len());
    }
    fn close(&mut self) {
        if let Some(m) = self.marks.pop() {
            self.items.truncate(m);
        }
    }
    fn push(&mut self, prefix: &str, uri: &str) {
        self.items.push((prefix.to_owned(), uri.to_owned()));
    }
    fn get(&self, prefix: &str) -> Option<&str> {
        self.items
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.as_str())
    }
    /// Every prefix in scope with its nearest binding.
    fn visible(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for (p, u) in self.items.iter().rev() {
            if !out.iter().any(|(q, _)| q == p) {
                out.push((p, u));
            }
        }
        out
    }
}

/// The canonicaliser as an event sink. Feed it a well-formed event stream
/// (the reader guarantees that), then call [`Canonicalizer::finish`].
pub struct Canonicalizer<'o, O: Output> {
    out: O,
    opts: &'o Options,
    /// Bindings in scope in the input (including invisible ancestors).
    in_scope: NsStack,
    /// Bindings already rendered on output ancestors.
    rendered: NsStack,
    /// Names of open output elements, for end tags.
    names: String,
    name_ends: Vec<usize>,
    depth: usize,
    root_done: bool,
    /// Depth of invisible ancestors entered with [`Canonicalizer::enter_context`].
    context: usize,
    scratch: Vec<u8>,
}

impl<'o, O: Output> Canonicalizer<'o, O> {
    pub fn new(out: O, opts: &'o Options) -> Self {
        Canonicalizer {
            out,
            opts,
            in_scope: NsStack::default(),
            rendered: NsStack::default(),
            names: String::new(),
            name_ends: Vec::new(),
            depth: 0,
            root_done: false,
            context: 0,
            scratch: Vec::new(),
        }
    }

    /// Declares an ancestor of the subset that is not itself output: its
    /// namespace declarations are in scope, nothing is rendered.
    pub fn enter_context(&mut self, el: &Element<'_>) {
        self.in_scope.open();
        for d in &el.ns_decls {
            self.in_scope.push(d.prefix, d.uri);
        }
        self.context += 1;
    }

    pub fn finish(self) -> O {
        self.out
    }

    fn top_level_node(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at_top = self.depth == 0;
        self.scratch.clear();
        if at_top && self.root_done {
            self.scratch.push(b'\n');
        }
        write(&mut self.scratch);
        if at_top && !self.root_done {
            self.scratch.push(b'\n');
        }
        self.out.put(&self.scratch);
    }
}

impl<O: Output> Sink for Canonicalizer<'_, O> {
    fn start(&mut self, el: &Element<'_>) {
        self.in_scope.open();
        for d in &el.ns_decls {
            self.in_scope.push(d.prefix, d.uri);
        }

        // Namespace nodes to consider: for exclusive C14N the visibly
        // utilised prefixes plus the PrefixList; for inclusive, all in scope.
        let mut cand: SmallVec<[(&str, &str); 8]> = SmallVec::new();
        if self.opts.exclusive {
            cand.push((el.prefix, el.ns));
            for a in &el.attrs {
                if !a.prefix.is_empty()
                    && a.prefix != "xml"
                    && !cand.iter().any(|(p, _)| *p == a.prefix)
                {
                    cand.push((a.prefix, a.ns));
                }
            }
            for p in &self.opts.inclusive_prefixes {
                if !cand.iter().any(|(q, _)| q == p) {
                    if let Some(u) = self.in_scope.get(p) {
                        cand.push((p.as_str(), u));
                    }
                }
            }
        } else {
            cand = self.in_scope.visible().into_iter().collect();
        }
        // The xml prefix is bound by definition and never declared.
        cand.retain(|(p, _)| *p != "xml");
        cand.sort_unstable_by(|a, b| a.0.cmp(b.0));

        self.scratch.clear();
        self.scratch.push(b'<');
        self.scratch.extend_from_slice(el.qname.as_bytes());
        self.rendered.open();
        for (p, u) in cand {
            // Candidates have distinct prefixes, so pushing as we go cannot
            // change the answer for a later one.
            let cur = self.rendered.get(p);
            let render = if p.is_empty() {
                // xmlns="" only undoes a non-empty default rendered above.
                u != cur.unwrap_or("")
            } else {
                cur != Some(u)
            };
            if render {
                emit_ns(&mut self.scratch, p, u);
                self.rendered.push(p, u);
            }
        }

        let mut attrs: SmallVec<[&Attr<'_>; 4]> = el.attrs.iter().collect();
        if attrs.len() > 1 {
            // Unqualified attributes (empty namespace) are the common case;
            // comparing their empty namespaces would cost a call each.
            attrs.sort_unstable_by(|a, b| match (a.ns.is_empty(), b.ns.is_empty()) {
                (true, true) => a.local.cmp(b.local),
                _ => (a.ns, a.local).cmp(&(b.ns, b.local)),
            });
        }
        for a in attrs {
            self.scratch.push(b' ');
            if !a.prefix.is_empty() {
                self.scratch.extend_from_slice(a.prefix.as_bytes());
                self.scratch.push(b':');
            }
            self.scratch.extend_from_slice(a.local.as_bytes());
            self.scratch.extend_from_slice(b"=\"");
            escape_attr(&mut self.scratch, a.value);
            self.scratch.push(b'"');
        }
        self.scratch.push(b'>');
        self.out.put(&self.scratch);
        self.names.push_str(el.qname);
        self.name_ends.push(self.names.len());
        self.depth += 1;
    }

    fn end(&mut self, _span: (usize, usize)) {
        if self.depth == 0 {
            // Closing an invisible context ancestor.
            if self.context > 0 {
                self.context -= 1;
                self.in_scope.close();
            }
            return;
        }
        self.name_ends.pop();
        let start = self.name_ends.last().copied().unwrap_or(0);
        self.scratch.clear();
        self.scratch.extend_from_slice(b"</");
        self.scratch
            .extend_from_slice(&self.names.as_bytes()[start..]);
        self.scratch.push(b'>');
        self.out.put(&self.scratch);
        self.names.truncate(start);
        self.depth -= 1;
        self.in_scope.close();
        self.rendered.close();
        if self.depth == 0 {
            self.root_done = true;
        }
    }

    fn text(&mut self, text: &str) {
        let b = text.as_bytes();
        if memchr::memchr3(b'&', b'<', b'>', b).is_none() && memchr::memchr(b'\r', b).is_none() {
            self.out.put(b);
            return;
        }
        self.scratch.clear();
        escape_text(&mut self.scratch, text);
        self.out.put(&self.scratch);
    }

    fn comment(&mut self, text: &str) {
        if !self.opts.with_comments {
            return;
        }
        self.top_level_node(|b| {
            b.extend_from_slice(b"<!--");
            b.extend_from_slice(text.as_bytes());
            b.extend_from_slice(b"-->");
        });
    }

    fn pi(&mut self, target: &str, data: &str) {
        self.top_level_node(|b| {
            b.extend_from_slice(b"<?");
            b.extend_from_slice(target.as_bytes());
            if !data.is_empty() {
                b.push(b' ');
                b.extend_from_slice(data.as_bytes());
            }
            b.extend_from_slice(b"?>");
        });
    }
}

fn emit_ns(out: &mut Vec<u8>, prefix: &str, uri: &str) {
    out.extend_from_slice(b" xmlns");
    if !prefix.is_empty() {
        out.push(b':');
        out.extend_from_slice(prefix.as_bytes());
    }
    out.extend_from_slice(b"=\"");
    escape_attr(out, uri);
    out.push(b'"');
}

/// Appends `s`, replacing each byte for which `rep` has a replacement.
fn escape_with(out: &mut Vec<u8>, s: &str, rep: fn(u8) -> Option<&'static [u8]>) {
    let b = s.as_bytes();
    let mut last = 0;
    for (i, &c) in b.iter().enumerate() {
        if let Some(r) = rep(c) {
            out.extend_from_slice(&b[last..i]);
            out.extend_from_slice(r);
            last = i + 1;
        }
    }
    out.extend_from_slice(&b[last..]);
}

/// Text nodes (C14N 1.0, section 2.3).
fn text_escape(c: u8) -> Option<&'static [u8]> {
    match c {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'>' => Some(b"&gt;"),
        b'\r' => Some(b"&#xD;"),
        _ => None,
    }
}

/// Attribute values and namespace URIs (C14N 1.0, section 2.3).
fn attr_escape(c: u8) -> Option<&'static [u8]> {
    match c {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'"' => Some(b"&quot;"),
        b'\t' => Some(b"&#x9;"),
        b'\n' => Some(b"&#xA;"),
        b'\r' => Some(b"&#xD;"),
        _ => None,
    }
}

fn escape_text(out: &mut Vec<u8>, s: &str) {
    escape_with(out, s, text_escape);
}

fn escape_attr(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|c| attr_escape(c).is_some()) {
        escape_with(out, s, attr_escape);
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn exc(s: &str) -> String {
        let c = canonicalize(s.as_bytes(), &Options::exclusive(), &Limits::default()).unwrap();
        String::from_utf8(c.into_bytes()).unwrap()
    }

    fn inc(s: &str) -> String {
        let c = canonicalize(s.as_bytes(), &Options::default(), &Limits::default()).unwrap();
        String::from_utf8(c.into_bytes()).unwrap()
    }

    #[test]
    fn exclusive_renders_only_utilised_namespaces() {
        assert_eq!(
            exc("<a:r xmlns:a='A' xmlns:b='B'><b:c/><d/></a:r>"),
            "<a:r xmlns:a=\"A\"><b:c xmlns:b=\"B\"></b:c><d></d></a:r>"
        );
        assert_eq!(
            inc("<a:r xmlns:a='A' xmlns:b='B'><b:c/><d/></a:r>"),
            "<a:r xmlns:a=\"A\" xmlns:b=\"B\"><b:c></b:c><d></d></a:r>"
        );
    }

    #[test]
    fn default_namespace_undeclaration() {
        assert_eq!(
            exc("<r xmlns='u'><c xmlns=''/></r>"),
            "<r xmlns=\"u\"><c xmlns=\"\"></c></r>"
        );
        assert_eq!(exc("<r><c xmlns=''/></r>"), "<r><c></c></r>");
    }

    #[test]
    fn attributes_sorted_by_namespace_then_name() {
        assert_eq!(
            exc("<r xmlns:z='a' xmlns:a='b' a:x='1' z:y='2' b='3' xml:lang='sr'/>"),
            "<r xmlns:a=\"b\" xmlns:z=\"a\" b=\"3\" z:y=\"2\" a:x=\"1\" xml:lang=\"sr\"></r>"
        );
    }

    #[test]
    fn escaping_and_top_level_nodes() {
        let doc = "<?xml version='1.0'?>\n<?pi  data ?><!--c--><r a='&quot;&#9;&#10;&#13;&lt;'>&amp;&lt;&gt;&#13;<![CDATA[<x>]]></r><!--after-->";
        assert_eq!(
            exc(doc),
            "<?pi data ?>\n<r a=\"&quot;&#x9;&#xA;&#xD;&lt;\">&amp;&lt;&gt;&#xD;&lt;x&gt;</r>"
        );
        let o = Options {
            with_comments: true,
            ..Options::exclusive()
        };
        let c = canonicalize(doc.as_bytes(), &o, &Limits::default()).unwrap();
        assert_eq!(
            String::from_utf8(c.into_bytes()).unwrap(),
            "<?pi data ?>\n<!--c-->\n<r a=\"&quot;&#x9;&#xA;&#xD;&lt;\">&amp;&lt;&gt;&#xD;&lt;x&gt;</r>\n<!--after-->"
        );
    }

    #[test]
    fn prefix_list_renders_in_scope_prefixes() {
        let o = Options::exclusive().with_prefix_list("b #default");
        let c = canonicalize(
            b"<r xmlns='d' xmlns:b='B' xmlns:c='C'><x/></r>",
            &o,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(c.into_bytes()).unwrap(),
            "<r xmlns=\"d\" xmlns:b=\"B\"><x></x></r>"
        );
    }

    proptest! {
        /// Canonical form is a fixed point: canonicalising it again changes nothing.
        #[test]
        fn canonicalising_twice_changes_nothing(
            body in "[a-z <>&\"'\r\n\t]{0,30}",
            attr in "[a-z <>&\"'\r\n\t]{0,10}",
            ns in proptest::bool::ANY,
        ) {
            let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;").replace('\r', "&#13;");
            let doc = format!(
                "<r{} a=\"{}\"><p:c xmlns:p='u' p:x='1'>{}</p:c></r>",
                if ns { " xmlns='d'" } else { "" },
                esc(&attr),
                esc(&body).replace('>', "&gt;")
            );
            let once = canonicalize(doc.as_bytes(), &Options::exclusive(), &Limits::default()).unwrap();
            let twice = canonicalize(once.as_bytes(), &Options::exclusive(), &Limits::default()).unwrap();
            prop_assert_eq!(once, twice);
        }
    }
}
