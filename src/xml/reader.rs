//! Hardened reading of XML from outside (registries, files, clients) on
//! quick-xml. This is the only place where bytes become XML events; the
//! canonicaliser and the tree both consume what it emits through [`Sink`].
//!
//! What it refuses, and why:
//! - anything but UTF-8 (we never transcode signed bytes);
//! - any `<!DOCTYPE`, hence any entity declaration or external reference
//!   (XXE, billion laughs): refused, never expanded;
//! - entity references other than the five predefined ones;
//! - undeclared namespace prefixes and duplicate attributes (also duplicates
//!   by expanded name), because C14N and signature checks rely on them;
//! - more than [`Limits`] allow: depth, attributes per element, name and
//!   text length, total size.
//!
//! What it normalises, as an XML processor must: line ends (`\r\n` and `\r`
//! become `\n`) and attribute-value whitespace (literal tab, CR and LF
//! become spaces). Character references are decoded, so `&#13;` stays a CR.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use smallvec::SmallVec;

pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Bounds on what one document may cost us.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Total input size in bytes.
    pub max_size: usize,
    /// Element nesting depth.
    pub max_depth: usize,
    /// Attributes (including namespace declarations) on one element.
    pub max_attributes: usize,
    /// Length of one element or attribute name, in bytes.
    pub max_name_len: usize,
    /// Length of one text node or attribute value, in bytes.
    pub max_text_len: usize,
    /// Elements in the whole document. Each costs a few hundred bytes in
    /// the tree, so without a bound 10 MB of `<a/>` took ~780 MB; at
    /// 100,000 the tree stays near 30 MB, and the largest registry
    /// document seen (a property sheet of a whole cadastral municipality)
    /// has under a tenth of that.
    pub max_elements: usize,
    /// Nodes in the whole document: elements, attributes (namespace
    /// declarations included), text pieces, comments and processing
    /// instructions. Elements alone do not bound the tree: 10 MB of empty
    /// comments or `<?a?>` made 1.5–2 million nodes (660–860 MB), and 250
    /// attributes on each of 7,000 elements 210 MB. A registry document
    /// has a few nodes per element, so this is well above any genuine one.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: 10 * 1024 * 1024,
            max_depth: 64,
            max_attributes: 256,
            max_name_len: 1024,
            max_text_len: 10 * 1024 * 1024,
            max_elements: 100_000,
            max_nodes: 250_000,
        }
    }
}

/// What is wrong with a document. Always carries the byte offset; the
/// message adds line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct XmlError {
    pub kind: XmlErrorKind,
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlErrorKind {
    #[error("document is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("only UTF-8 is accepted: {0}")]
    Encoding(String),
    #[error("DOCTYPE declarations are refused (no DTDs, entities or external references)")]
    Doctype,
    #[error("entity reference &{0}; is refused: only &lt; &gt; &amp; &quot; &apos; and character references are allowed")]
    Entity(String),
    #[error("invalid character reference &{0};")]
    CharRef(String),
    #[error("character U+{0:04X} is not allowed in XML")]
    BadChar(u32),
    #[error("element nesting deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} elements")]
    TooManyElements(usize),
    #[error(
        "more than {0} nodes (elements, attributes, text, comments and processing instructions)"
    )]
    TooManyNodes(usize),
    #[error("element has more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("name longer than {0} bytes")]
    NameTooLong(usize),
    #[error("text or attribute value longer than {0} bytes")]
    TextTooLong(usize),
    #[error("invalid name {0:?}")]
    BadName(String),
    #[error("namespace prefix {0:?} is not declared")]
    UndeclaredPrefix(String),
    #[error("invalid namespace declaration: {0}")]
    BadNamespace(String),
    #[error("attribute {0} appears twice")]
    DuplicateAttribute(String),
    #[error("'<' is not allowed in an attribute value")]
    LtInAttribute,
    #[error("text outside the root element")]
    TextOutsideRoot,
    #[error("more than one root element")]
    SecondRoot,
    #[error("no root element")]
    NoRoot,
    #[error("document ends inside {0} open element(s)")]
    Unclosed(usize),
    #[error("malformed XML declaration: {0}")]
    Declaration(String),
    #[error("{0}")]
    Syntax(String),
}

impl XmlError {
    pub fn new(input: &[u8], offset: usize, kind: XmlErrorKind) -> XmlError {
        let offset = offset.min(input.len());
        let before = &input[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        XmlError {
            kind,
            offset,
            line,
            column,
        }
    }
}

/// One attribute, namespace resolved. `ns` is empty for unprefixed ones.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'e> {
    pub prefix: &'e str,
    pub local: &'e str,
    pub ns: &'e str,
    pub value: &'e str,
}

impl Attr<'_> {
    pub fn qname(&self) -> String {
        if self.prefix.is_empty() {
            self.local.to_owned()
        } else {
            format!("{}:{}", self.prefix, self.local)
        }
    }
}

/// A namespace declaration on an element; `prefix` is empty for `xmlns=`.
#[derive(Debug, Clone, Copy)]
pub struct NsDecl<'e> {
    pub prefix: &'e str,
    pub uri: &'e str,
}

/// A start tag as the sink sees it.
#[derive(Debug)]
pub struct Element<'e> {
    /// The name as written, `prefix:local` or `local`.
    pub qname: &'e str,
    pub prefix: &'e str,
    pub local: &'e str,
    /// The namespace the element is in (empty: none).
    pub ns: &'e str,
    pub attrs: SmallVec<[Attr<'e>; 4]>,
    pub ns_decls: SmallVec<[NsDecl<'e>; 2]>,
    /// Byte span of the start tag in the input (`<` .. after `>`).
    pub span: (usize, usize),
    /// `<a/>` rather than `<a></a>`.
    pub empty: bool,
}

/// Receives a well-formed document's events in order.
pub trait Sink {
    fn start(&mut self, el: &Element<'_>);
    /// `span` is the end tag's byte span; for an empty element, the start tag's.
    fn end(&mut self, span: (usize, usize));
    /// Character data inside the root element; may arrive in several pieces.
    fn text(&mut self, text: &str);
    fn comment(&mut self, text: &str);
    fn pi(&mut self, target: &str, data: &str);
}

/// Parses `input` completely, feeding `sink`. On error the sink may have
/// seen a prefix of the events; callers discard what it built.
pub fn parse<S: Sink>(input: &[u8], limits: &Limits, sink: &mut S) -> Result<(), XmlError> {
    Parser::new(input, limits)?.run(sink)
}

struct Scope {
    prefix: String,
    uri: String,
}

struct Parser<'a> {
    input: &'a [u8],
    /// The input after a UTF-8 BOM.
    text: &'a [u8],
    /// Where the text starts after a UTF-8 BOM.
    base: usize,
    limits: &'a Limits,
    scopes: Vec<Scope>,
    marks: Vec<usize>,
    depth: usize,
    root_seen: bool,
    elements: usize,
    nodes: usize,
}

/// First position of a character XML 1.0 never allows anywhere, not even in
/// markup: C0 controls other than TAB, LF, CR, and U+FFFE / U+FFFF. Scans
/// in blocks so the common all-clean case vectorises.
fn find_forbidden(b: &[u8]) -> Option<usize> {
    // Bitwise rather than `&&` so that LLVM can vectorise the block test.
    let bad = |c: u8| (c < 0x20) & (c != b'\t') & (c != b'\n') & (c != b'\r');
    for (i, chunk) in b.chunks(64).enumerate() {
        if chunk.iter().fold(0u8, |acc, &c| acc | bad(c) as u8) != 0 {
            return chunk.iter().position(|&c| bad(c)).map(|p| i * 64 + p);
        }
    }
    // U+FFFE and U+FFFF are EF BF BE and EF BF BF in UTF-8.
    memchr::memmem::find_iter(b, b"\xEF\xBF")
        .find(|&p| matches!(b.get(p + 2), Some(0xBE) | Some(0xBF)))
}

fn err<T>(input: &[u8], offset: usize, kind: XmlErrorKind) -> Result<T, XmlError> {
    Err(XmlError::new(input, offset, kind))
}

fn is_xml_char(c: u32) -> bool {
    matches!(c, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || (c as u32) >= 0x80 && !c.is_whitespace()
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit() || c == '-' || c == '.' || c == '\u{B7}'
}

fn check_ncname(s: &str) -> bool {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if is_name_start(c) => cs.all(is_name_char),
        _ => false,
    }
}

/// Splits a QName, checking both parts are NCNames.
fn split_qname(q: &str) -> Option<(&str, &str)> {
    match q.split_once(':') {
        Some((p, l)) if check_ncname(p) && check_ncname(l) => Some((p, l)),
        Some(_) => None,
        None if check_ncname(q) => Some(("", q)),
        None => None,
    }
}

/// Decodes `&name;` (without the `&` and `;`) to its character.
fn decode_ref(name: &str) -> Result<char, XmlErrorKind> {
    if let Some(num) = name.strip_prefix('#') {
        let code = if let Some(hex) = num.strip_prefix('x') {
            if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(XmlErrorKind::CharRef(name.to_owned()));
            }
            u32::from_str_radix(hex, 16).ok()
        } else {
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(XmlErrorKind::CharRef(name.to_owned()));
            }
            num.parse::<u32>().ok()
        };
        return match code {
            Some(c) if is_xml_char(c) => char::from_u32(c).ok_or(XmlErrorKind::BadChar(c)),
            Some(c) => Err(XmlErrorKind::BadChar(c)),
            None => Err(XmlErrorKind::CharRef(name.to_owned())),
        };
    }
    match name {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => Err(XmlErrorKind::Entity(name.to_owned())),
    }
}

/// Line-end normalisation of literal text: `\r\n` and lone `\r` become `\n`.
fn normalize_newlines(s: &str) -> Cow<'_, str> {
    if !s.contains('\r') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Attribute-value normalisation for CDATA-typed attributes (all of ours,
/// as there is no DTD): references decoded, literal whitespace to spaces.
fn normalize_attr(raw: &str) -> Result<Cow<'_, str>, XmlErrorKind> {
    if !raw
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        rest = &rest[i + 1..];
        match c {
            b'<' => return Err(XmlErrorKind::LtInAttribute),
            b'&' => {
                let end = rest.find(';').ok_or_else(|| {
                    XmlErrorKind::Syntax("unterminated reference in attribute value".into())
                })?;
                out.push(decode_ref(&rest[..end])?);
                rest = &rest[end + 1..];
            }
            b'\r' => {
                if rest.starts_with('\n') {
                    rest = &rest[1..];
                }
                out.push(' ');
            }
            _ => out.push(' '),
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], limits: &'a Limits) -> Result<Parser<'a>, XmlError> {
        if input.len() > limits.max_size {
            return err(
                input,
                0,
                XmlErrorKind::TooLarge {
                    size: input.len(),
                    limit: limits.max_size,
                },
            );
        }
        if input.starts_with(&[0xFE, 0xFF])
            || input.starts_with(&[0xFF, 0xFE])
            || input.starts_with(&[0, 0, 0xFE, 0xFF])
            || (input.len() >= 2 && (input[0] == 0 || input[1] == 0))
        {
            return err(
                input,
                0,
                XmlErrorKind::Encoding("input looks like UTF-16 or UTF-32".into()),
            );
        }
        let base = if input.starts_with(&[0xEF, 0xBB, 0xBF]) {
            3
        } else {
            0
        };
        // UTF-8 validity is checked by quick-xml on every event it emits
        // (it hands out &str); checking the whole input here again would
        // double the cost. Only the error path locates the byte itself.
        let text = &input[base..];
        if let Some(p) = find_forbidden(text) {
            let c = match text[p] {
                0xEF if text.get(p + 2) == Some(&0xBE) => 0xFFFE,
                0xEF => 0xFFFF,
                b => b as u32,
            };
            return err(input, base + p, XmlErrorKind::BadChar(c));
        }
        Ok(Parser {
            input,
            text,
            base,
            limits,
            scopes: vec![Scope {
                prefix: "xml".into(),
                uri: XML_NS.into(),
            }],
            marks: Vec::new(),
            depth: 0,
            root_seen: false,
            elements: 0,
            nodes: 0,
        })
    }

    fn fail<T>(&self, offset: usize, kind: XmlErrorKind) -> Result<T, XmlError> {
        err(self.input, self.base + offset, kind)
    }

    fn run<S: Sink>(mut self, sink: &mut S) -> Result<(), XmlError> {
        let mut reader = Reader::from_reader(self.text);
        {
            let c = reader.config_mut();
            c.check_comments = true;
            c.check_end_names = true;
            c.expand_empty_elements = false;
            c.trim_text(false);
        }
        let mut first = true;
        loop {
            let pos = reader.buffer_position() as usize;
            let ev = match reader.read_event() {
                Ok(ev) => ev,
                Err(quick_xml::Error::Encoding(_)) => {
                    let at = std::str::from_utf8(self.text)
                        .err()
                        .map_or(0, |e| e.valid_up_to());
                    return self.fail(
                        at,
                        XmlErrorKind::Encoding("invalid UTF-8 byte sequence".into()),
                    );
                }
                Err(e) => {
                    let at = reader.error_position() as usize;
                    return self.fail(at, XmlErrorKind::Syntax(e.to_string()));
                }
            };
            let end = reader.buffer_position() as usize;
            match ev {
                Event::Decl(d) => {
                    if !first {
                        return self.fail(
                            pos,
                            XmlErrorKind::Declaration("the XML declaration must come first".into()),
                        );
                    }
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(|e| {
                            XmlError::new(self.input, pos, XmlErrorKind::Declaration(e.to_string()))
                        })?;
                        if !enc.eq_ignore_ascii_case("utf-8") {
                            return self.fail(
                                pos,
                                XmlErrorKind::Encoding(format!(
                                    "the declaration names encoding {:?}",
                                    enc
                                )),
                            );
                        }
                    }
                    match d.version() {
                        Ok(v) if v == "1.0" => {}
                        Ok(v) => {
                            return self.fail(
                                pos,
                                XmlErrorKind::Declaration(format!(
                                    "version {:?} is not supported, only 1.0",
                                    v
                                )),
                            )
                        }
                        Err(e) => return self.fail(pos, XmlErrorKind::Declaration(e.to_string())),
                    }
                }
                Event::DocType(_) => return self.fail(pos, XmlErrorKind::Doctype),
                Event::Start(e) => self.start(&e, (pos, end), false, sink)?,
                Event::Empty(e) => self.start(&e, (pos, end), true, sink)?,
                Event::End(_) => {
                    self.close_scope();
                    sink.end((pos, end));
                }
                Event::Text(t) => {
                    let raw: &str = &t;
                    self.text(raw, pos, sink)?;
                }
                Event::CData(t) => {
                    if self.depth == 0 {
                        return self.fail(pos, XmlErrorKind::TextOutsideRoot);
                    }
                    let raw: &str = &t;
                    if raw.len() > self.limits.max_text_len {
                        return self.fail(pos, XmlErrorKind::TextTooLong(self.limits.max_text_len));
                    }
                    self.nodes(1, pos)?;
                    sink.text(&normalize_newlines(raw));
                }
                Event::GeneralRef(r) => {
                    if self.depth == 0 {
                        return self.fail(pos, XmlErrorKind::TextOutsideRoot);
                    }
                    let name: &str = &r;
                    let c = decode_ref(name).or_else(|k| self.fail(pos, k))?;
                    self.nodes(1, pos)?;
                    let mut buf = [0u8; 4];
                    sink.text(c.encode_utf8(&mut buf));
                }
                Event::Comment(t) => {
                    self.nodes(1, pos)?;
                    let raw: &str = &t;
                    sink.comment(&normalize_newlines(raw));
                }
                Event::PI(p) => {
                    self.nodes(1, pos)?;
                    let raw: &str = &p;
                    let (target, data) = match raw.find(|c: char| c.is_ascii_whitespace()) {
                        Some(i) => (
                            &raw[..i],
                            raw[i..].trim_start_matches(|c: char| c.is_ascii_whitespace()),
                        ),
                        None => (raw, ""),
                    };
                    if !check_ncname(target) || target.eq_ignore_ascii_case("xml") {
                        return self.fail(pos, XmlErrorKind::BadName(target.to_owned()));
                    }
                    sink.pi(target, &normalize_newlines(data));
                }
                Event::Eof => {
                    if self.depth > 0 {
                        return self.fail(self.text.len(), XmlErrorKind::Unclosed(self.depth));
                    }
                    if !self.root_seen {
                        return self.fail(self.text.len(), XmlErrorKind::NoRoot);
                    }
                    return Ok(());
                }
            }
            first = false;
        }
    }

    fn text<S: Sink>(&mut self, raw: &str, pos: usize, sink: &mut S) -> Result<(), XmlError> {
        if self.depth == 0 {
            if raw.bytes().all(|b| b.is_ascii_whitespace()) {
                return Ok(());
            }
            return self.fail(pos, XmlErrorKind::TextOutsideRoot);
        }
        if raw.len() > self.limits.max_text_len {
            return self.fail(pos, XmlErrorKind::TextTooLong(self.limits.max_text_len));
        }
        self.nodes(1, pos)?;
        if let Some(i) = memchr::memmem::find(raw.as_bytes(), b"]]>") {
            return self.fail(
                pos + i,
                XmlErrorKind::Syntax("']]>' is not allowed in text".into()),
            );
        }
        sink.text(&normalize_newlines(raw));
        Ok(())
    }

    /// Counts `n` more nodes against [`Limits::max_nodes`].
    fn nodes(&mut self, n: usize, pos: usize) -> Result<(), XmlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return self.fail(pos, XmlErrorKind::TooManyNodes(self.limits.max_nodes));
        }
        Ok(())
    }

    fn close_scope(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        if let Some(m) = self.marks.pop() {
            self.scopes.truncate(m);
        }
    }

    fn start<S: Sink>(
        &mut self,
        e: &BytesStart<'_>,
        span: (usize, usize),
        empty: bool,
        sink: &mut S,
    ) -> Result<(), XmlError> {
        let pos = span.0;
        if self.depth == 0 {
            if self.root_seen {
                return self.fail(pos, XmlErrorKind::SecondRoot);
            }
            self.root_seen = true;
        }
        if self.depth >= self.limits.max_depth {
            return self.fail(pos, XmlErrorKind::TooDeep(self.limits.max_depth));
        }
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return self.fail(pos, XmlErrorKind::TooManyElements(self.limits.max_elements));
        }
        self.nodes(1, pos)?;
        let qname: &str = e.name().0;
        if qname.len() > self.limits.max_name_len {
            return self.fail(pos, XmlErrorKind::NameTooLong(self.limits.max_name_len));
        }
        let (prefix, local) = split_qname(qname).ok_or_else(|| {
            XmlError::new(
                self.input,
                self.base + pos,
                XmlErrorKind::BadName(qname.to_owned()),
            )
        })?;

        // Raw attributes first: declarations must be known before any
        // prefix on this element can be resolved.
        let mut raw_attrs: SmallVec<[(&str, Cow<'_, str>); 4]> = SmallVec::new();
        let mut decls: SmallVec<[(&str, Cow<'_, str>); 2]> = SmallVec::new();
        for a in e.attributes().with_checks(true) {
            let a = a.map_err(|er| {
                let kind = match er {
                    // Name the attribute: quick-xml's message gives offsets only.
                    quick_xml::events::attributes::AttrError::Duplicated(..) => {
                        let mut seen: SmallVec<[&str; 8]> = SmallVec::new();
                        let dup = e
                            .attributes()
                            .with_checks(false)
                            .flatten()
                            .map(|a| a.key.0)
                            .find(|k| {
                                let again = seen.contains(k);
                                seen.push(k);
                                again
                            })
                            .unwrap_or_default();
                        XmlErrorKind::DuplicateAttribute(dup.to_owned())
                    }
                    other => XmlErrorKind::Syntax(other.to_string()),
                };
                XmlError::new(self.input, self.base + pos, kind)
            })?;
            self.nodes(1, pos)?;
            if raw_attrs.len() + decls.len() >= self.limits.max_attributes {
                return self.fail(
                    pos,
                    XmlErrorKind::TooManyAttributes(self.limits.max_attributes),
                );
            }
            let key: &str = a.key.0;
            if key.len() > self.limits.max_name_len {
                return self.fail(pos, XmlErrorKind::NameTooLong(self.limits.max_name_len));
            }
            let rawv: &str = match &a.value {
                Cow::Borrowed(b) => b,
                // quick-xml borrows from a &str input; an owned value would
                // only come from a reader that decodes, which we do not use.
                Cow::Owned(_) => {
                    return self.fail(
                        pos,
                        XmlErrorKind::Syntax("unexpected attribute encoding".into()),
                    )
                }
            };
            if rawv.len() > self.limits.max_text_len {
                return self.fail(pos, XmlErrorKind::TextTooLong(self.limits.max_text_len));
            }
            let value = normalize_attr(rawv).or_else(|k| self.fail(pos, k))?;
            if key == "xmlns" {
                decls.push(("", value));
            } else if let Some(p) = key.strip_prefix("xmlns:") {
                decls.push((p, value));
            } else {
                raw_attrs.push((key, value));
            }
        }

        for (p, uri) in &decls {
            let bad = |m: String| {
                XmlError::new(self.input, self.base + pos, XmlErrorKind::BadNamespace(m))
            };
            if !p.is_empty() && !check_ncname(p) {
                return Err(bad(format!("invalid prefix {p:?}")));
            }
            if *p == "xmlns" {
                return Err(bad("the prefix xmlns must not be declared".into()));
            }
            if (*p == "xml") != (uri.as_ref() == XML_NS) {
                return Err(bad(format!("the prefix xml is bound only to {XML_NS}")));
            }
            if uri.as_ref() == XMLNS_NS {
                return Err(bad(format!("{XMLNS_NS} must not be declared")));
            }
            if !p.is_empty() && uri.is_empty() {
                return Err(bad(format!("prefix {p:?} cannot be undeclared in XML 1.0")));
            }
            if decls.iter().filter(|(q, _)| q == p).count() > 1 {
                return self.fail(
                    pos,
                    XmlErrorKind::DuplicateAttribute(if p.is_empty() {
                        "xmlns".into()
                    } else {
                        format!("xmlns:{p}")
                    }),
                );
            }
        }

        self.marks.push(self.scopes.len());
        for (p, uri) in &decls {
            self.scopes.push(Scope {
                prefix: (*p).to_owned(),
                uri: uri.as_ref().to_owned(),
            });
        }
        self.depth += 1;

        let el_ns = self.resolve(prefix, true, pos)?;
        // Resolved namespaces are indexes into `scopes` (None: no namespace),
        // so the element borrows them instead of copying.
        let mut resolved: SmallVec<[(&str, &str, Option<usize>); 4]> = SmallVec::new();
        for (key, _) in &raw_attrs {
            let (p, l) = split_qname(key).ok_or_else(|| {
                XmlError::new(
                    self.input,
                    self.base + pos,
                    XmlErrorKind::BadName((*key).to_owned()),
                )
            })?;
            let ns = if p.is_empty() {
                None
            } else {
                self.resolve(p, false, pos)?
            };
            let uri = |i: Option<usize>| i.map_or("", |i| self.scopes[i].uri.as_str());
            // quick-xml already refused equal raw names, and a prefix is never
            // bound to no namespace, so only two prefixed attributes can clash.
            if ns.is_some()
                && resolved
                    .iter()
                    .any(|(_, l2, ns2)| ns2.is_some() && *l2 == l && uri(*ns2) == uri(ns))
            {
                return self.fail(pos, XmlErrorKind::DuplicateAttribute((*key).to_owned()));
            }
            resolved.push((p, l, ns));
        }
        let scopes = &self.scopes;
        let uri = |i: Option<usize>| i.map_or("", |i| scopes[i].uri.as_str());
        let el = Element {
            qname,
            prefix,
            local,
            ns: uri(el_ns),
            attrs: resolved
                .iter()
                .zip(&raw_attrs)
                .map(|((p, l, ns), (_, v))| Attr {
                    prefix: p,
                    local: l,
                    ns: uri(*ns),
                    value: v.as_ref(),
                })
                .collect(),
            ns_decls: decls
                .iter()
                .map(|(p, u)| NsDecl {
                    prefix: p,
                    uri: u.as_ref(),
                })
                .collect(),
            span: (self.base + span.0, self.base + span.1),
            empty,
        };
        sink.start(&el);
        drop(el);
        if empty {
            self.close_scope();
            sink.end((self.base + span.0, self.base + span.1));
        }
        Ok(())
    }

    /// Index of the binding of `prefix` in `scopes`; None for no namespace.
    fn resolve(&self, prefix: &str, element: bool, pos: usize) -> Result<Option<usize>, XmlError> {
        if prefix.is_empty() && !element {
            // The default namespace applies to elements, never to attributes.
            return Ok(None);
        }
        if prefix == "xmlns" {
            return self.fail(
                pos,
                XmlErrorKind::BadNamespace("xmlns is not a usable prefix".into()),
            );
        }
        match self.scopes.iter().rposition(|s| s.prefix == prefix) {
            Some(i) => Ok(Some(i)),
            None if prefix.is_empty() => Ok(None),
            None => self.fail(pos, XmlErrorKind::UndeclaredPrefix(prefix.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Records events as text so tests can compare them.
    #[derive(Default)]
    struct Trace(Vec<String>);

    impl Sink for Trace {
        fn start(&mut self, el: &Element<'_>) {
            let mut s = format!("<{{{}}}{}", el.ns, el.local);
            for a in &el.attrs {
                s.push_str(&format!(" {{{}}}{}={:?}", a.ns, a.local, a.value));
            }
            self.0.push(s);
        }
        fn end(&mut self, _: (usize, usize)) {
            self.0.push("/".into());
        }
        fn text(&mut self, t: &str) {
            self.0.push(format!("t{t:?}"));
        }
        fn comment(&mut self, t: &str) {
            self.0.push(format!("c{t:?}"));
        }
        fn pi(&mut self, target: &str, data: &str) {
            self.0.push(format!("?{target} {data:?}"));
        }
    }

    fn run(s: &str) -> Result<Vec<String>, XmlError> {
        let mut t = Trace::default();
        parse(s.as_bytes(), &Limits::default(), &mut t)?;
        Ok(t.0)
    }

    fn kind(s: &str) -> XmlErrorKind {
        run(s).unwrap_err().kind
    }

    #[test]
    fn namespaces_resolve_and_attributes_normalise() {
        let ev = run("<a xmlns='u' xmlns:p='v' p:x='1&#9;2\t3\r\n4' y='&lt;'><b/></a>").unwrap();
        assert_eq!(ev[0], "<{u}a {v}x=\"1\\t2 3 4\" {}y=\"<\"");
        assert_eq!(ev[1], "<{u}b");
    }

    #[test]
    fn doctype_and_entities_are_refused() {
        assert_eq!(
            kind("<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>"),
            XmlErrorKind::Doctype
        );
        assert_eq!(kind("<a>&x;</a>"), XmlErrorKind::Entity("x".into()));
        assert_eq!(kind("<a b='&x;'/>"), XmlErrorKind::Entity("x".into()));
        let billion = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]><lolz>&lol2;</lolz>";
        assert_eq!(kind(billion), XmlErrorKind::Doctype);
        let xxe = "<!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><a>&e;</a>";
        assert_eq!(kind(xxe), XmlErrorKind::Doctype);
    }

    #[test]
    fn encodings_other_than_utf8_are_refused() {
        assert!(matches!(
            kind("<?xml version='1.0' encoding='ISO-8859-2'?><a/>"),
            XmlErrorKind::Encoding(_)
        ));
        let mut b = vec![0xFF, 0xFE];
        b.extend("<a/>".encode_utf16().flat_map(|u| u.to_le_bytes()));
        let e = parse(&b, &Limits::default(), &mut Trace::default()).unwrap_err();
        assert!(matches!(e.kind, XmlErrorKind::Encoding(_)));
        let e = parse(
            b"<a>\xC3\x28</a>",
            &Limits::default(),
            &mut Trace::default(),
        )
        .unwrap_err();
        assert!(matches!(e.kind, XmlErrorKind::Encoding(_)));
        assert_eq!(e.offset, 3);
        assert!(run("\u{FEFF}<a/>").is_ok());
    }

    #[test]
    fn limits_hold() {
        let deep = "<a>".repeat(65) + &"</a>".repeat(65);
        assert_eq!(kind(&deep), XmlErrorKind::TooDeep(64));
        let ok = "<a>".repeat(64) + &"</a>".repeat(64);
        assert!(run(&ok).is_ok());
        let attrs: String = (0..257).map(|i| format!(" a{i}='x'")).collect();
        assert_eq!(
            kind(&format!("<a{attrs}/>")),
            XmlErrorKind::TooManyAttributes(256)
        );
        // Nodes that are not elements count too: 10 MB of empty comments,
        // processing instructions, character references or attributes is
        // refused at the 250,001st node, not after the whole tree is built.
        for (what, piece) in [
            ("comments", "<!---->"),
            ("processing instructions", "<?a?>"),
            ("character references", "&#65;"),
        ] {
            let n = 10 * 1024 * 1024 / piece.len() - 2;
            let doc = format!("<r>{}</r>", piece.repeat(n));
            let e = parse(doc.as_bytes(), &Limits::default(), &mut Trace::default()).unwrap_err();
            assert_eq!(e.kind, XmlErrorKind::TooManyNodes(250_000), "{what}");
            assert!(
                e.offset < 3 + piece.len() * 250_001,
                "{what}: refused at byte {}",
                e.offset
            );
        }
        let attrs: String = (0..250).map(|i| format!(" a{i}=''")).collect();
        let wide = format!("<r>{}</r>", format!("<a{attrs}/>").repeat(5_000));
        assert_eq!(kind(&wide), XmlErrorKind::TooManyNodes(250_000));
        // A genuine document well within both budgets still reads.
        let fine = format!("<r>{}</r>", "<a x='1'>t<!--c--></a>".repeat(50_000));
        assert!(run(&fine).is_ok());
        // 10 MB of empty elements: refused at the 100,001st, before the
        // tree (a few hundred bytes per element) grows past ~30 MB.
        let empties = format!("<r>{}</r>", "<a/>".repeat(10 * 1024 * 1024 / 4 - 2));
        assert_eq!(kind(&empties), XmlErrorKind::TooManyElements(100_000));
        let e = parse(
            empties.as_bytes(),
            &Limits::default(),
            &mut Trace::default(),
        )
        .unwrap_err();
        assert!(e.offset < 400_010, "refused at byte {}", e.offset);
        let l = Limits {
            max_size: 10,
            ..Limits::default()
        };
        let e = parse(b"<a>0123456789</a>", &l, &mut Trace::default()).unwrap_err();
        assert!(matches!(e.kind, XmlErrorKind::TooLarge { .. }));
    }

    #[test]
    fn wellformedness_errors_are_precise() {
        assert_eq!(kind("<p:a/>"), XmlErrorKind::UndeclaredPrefix("p".into()));
        assert_eq!(
            kind("<a xmlns:p='u' xmlns:q='u' p:x='1' q:x='2'/>"),
            XmlErrorKind::DuplicateAttribute("q:x".into())
        );
        assert_eq!(kind("<a/><b/>"), XmlErrorKind::SecondRoot);
        assert_eq!(kind("<a/>x"), XmlErrorKind::TextOutsideRoot);
        assert_eq!(kind(""), XmlErrorKind::NoRoot);
        assert_eq!(kind("<a><b></b>"), XmlErrorKind::Unclosed(1));
        assert_eq!(kind("<a>\u{1}</a>"), XmlErrorKind::BadChar(1));
        assert_eq!(kind("<a>&#0;</a>"), XmlErrorKind::BadChar(0));
        assert_eq!(kind("<a b='<'/>"), XmlErrorKind::LtInAttribute);
        assert!(matches!(kind("<a></b>"), XmlErrorKind::Syntax(_)));
        assert!(matches!(
            kind("<a xmlns:p=''/>"),
            XmlErrorKind::BadNamespace(_)
        ));
        assert_eq!(
            kind("<a c='0' b='1' b='2'/>"),
            XmlErrorKind::DuplicateAttribute("b".into())
        );
        let e = run("<a>\n  <b>&nope;</b></a>").unwrap_err();
        assert_eq!((e.line, e.column), (2, 6));
        assert_eq!(
            e.to_string(),
            "line 2, column 6: entity reference &nope; is refused: only &lt; &gt; &amp; &quot; &apos; and character references are allowed"
        );
    }

    #[test]
    fn line_ends_are_normalised_but_char_refs_kept() {
        let ev = run("<a>x\r\ny\rz&#13;</a>").unwrap();
        assert_eq!(&ev[1..4], ["t\"x\\ny\\nz\"", "t\"\\r\"", "/"]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&b, &Limits::default(), &mut Trace::default());
        }

        #[test]
        fn xmlish_text_never_panics(s in "[<>/=a-c:&#;x'\" \r\n\t!\\[\\]?-]{0,120}") {
            let _ = run(&s);
            let _ = run(&format!("<r xmlns:a='u'>{s}</r>"));
        }

        /// Well-formed edits of the schema examples (text replaced,
        /// elements removed, repeated, wrapped, moved) are read.
        #[test]
        fn restructured_documents_are_read(
            which in any::<prop::sample::Index>(),
            edits in proptest::collection::vec(crate::xml::mutate::edit(), 1..6),
        ) {
            let docs = examples();
            let x = crate::xml::mutate::apply_all(&docs[which.index(docs.len())], &edits);
            let r = parse(&x, &Limits::default(), &mut Trace::default());
            prop_assert!(r.is_ok(), "{:?}\n{}", r.err(), String::from_utf8_lossy(&x));
        }

        /// What a hostile peer inserts into a valid document is refused,
        /// each for its own reason.
        #[test]
        fn hostile_insertions_are_refused_for_their_reason(
            which in any::<prop::sample::Index>(),
            (at, what) in crate::xml::mutate::hostile(),
        ) {
            let docs = examples();
            let x = crate::xml::mutate::insert(&docs[which.index(docs.len())], &at, what);
            let r = parse(&x, &Limits::default(), &mut Trace::default());
            let Err(e) = r else {
                return Err(TestCaseError::fail(format!("{what:?} was accepted")));
            };
            let want = |k: &XmlErrorKind| match what {
                w if w.starts_with("<!DOCTYPE") => matches!(k, XmlErrorKind::Doctype),
                "&e;" => matches!(k, XmlErrorKind::Entity(_)),
                "&#0;" | "&#xD800;" => matches!(k, XmlErrorKind::CharRef(_) | XmlErrorKind::BadChar(_)),
                "<u:x/>" => matches!(k, XmlErrorKind::UndeclaredPrefix(_)),
                "<a b=\"1\" b=\"2\"/>" => matches!(k, XmlErrorKind::DuplicateAttribute(_)),
                "<a xmlns:p=\"\"/>" => matches!(k, XmlErrorKind::BadNamespace(_)),
                "\u{FFFE}" => matches!(k, XmlErrorKind::BadChar(0xFFFE)),
                "<a:b:c/>" => matches!(k, XmlErrorKind::BadName(_) | XmlErrorKind::UndeclaredPrefix(_)),
                "<x xml:lang=\"sr\" xmlns:xml=\"urn:other\"/>" => matches!(k, XmlErrorKind::BadNamespace(_)),
                _ => true,
            };
            prop_assert!(want(&e.kind), "{what:?} refused for another reason: {e}");
        }
    }

    /// The schema examples: real documents of every kind we exchange.
    fn examples() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/examples");
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        v.sort();
        v.into_iter().map(|p| std::fs::read(p).unwrap()).collect()
    }
}
