//! What came over HTTP made into one SOAP message: the charset of its
//! `Content-Type` (UTF-8 when none names one), a UTF-8 byte order mark,
//! SOAP with attachments (`multipart/related`, the SOAP part first or
//! named by `start`) and MTOM (`application/xop+xml`, every `xop:Include`
//! replaced by its part's bytes in base64).
//!
//! The splitter is our own rather than a MIME crate's: the SOAP part must
//! come out byte for byte as it was sent (it is what the security server
//! logged and signed as `message.xml`), and the number of parts and the
//! size of each part's headers are counted while splitting. The body
//! itself was already capped while it was read.

use base64::Engine;

use super::{Attachment, XRoadError, XOP};
use crate::xml::dom::Document;
use crate::xml::Limits;

/// Limits counted while a multipart body is split.
#[derive(Debug, Clone)]
pub struct ReceiveLimits {
    /// Parts, the SOAP part included.
    pub max_parts: usize,
    /// Bytes of one part's MIME headers.
    pub max_header_bytes: usize,
    /// The XML reader's, for an MTOM part read to resolve its includes.
    pub xml: Limits,
    /// Bytes of the XML once every `xop:Include` is resolved: one part
    /// named by many includes must not multiply it.
    pub max_resolved: usize,
}

impl Default for ReceiveLimits {
    fn default() -> Self {
        ReceiveLimits {
            max_parts: 64,
            max_header_bytes: 16 * 1024,
            xml: Limits::default(),
            max_resolved: Limits::default().max_size.saturating_mul(4) / 3 + 4096,
        }
    }
}

/// One SOAP message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The SOAP part's bytes exactly as received (its transfer encoding,
    /// if any, undone): what the security server's signed document holds
    /// as `message.xml`, and what is delivered as the document.
    pub raw: Vec<u8>,
    /// The same as UTF-8 XML to parse: the byte order mark gone, the
    /// declaration saying UTF-8, every `xop:Include` resolved.
    pub xml: Vec<u8>,
    /// Every other part, in order (those an `xop:Include` named too).
    pub attachments: Vec<Attachment>,
    /// The SOAP part was MTOM's (`application/xop+xml`).
    pub mtom: bool,
    /// The charset its `Content-Type` named, when it named one: `raw` is
    /// in it, whatever (or whether) its XML declaration says, and is kept
    /// so, so it must be read by it again.
    pub charset: Option<String>,
}

/// Reads an answer's body by its `Content-Type`.
pub fn receive(
    content_type: Option<&str>,
    body: &[u8],
    limits: &ReceiveLimits,
) -> Result<Received, XRoadError> {
    let ct = match content_type {
        Some(c) => parse_type(c)?,
        // No type: take it as XML, its declaration or UTF-8 saying how.
        None => ContentType {
            essence: "text/xml".into(),
            params: Vec::new(),
        },
    };
    match ct.essence.as_str() {
        "multipart/related" => multipart(&ct, body, limits),
        "text/xml" | "application/soap+xml" | "application/xml" => {
            let xml = to_utf8(body, ct.param("charset"))?;
            Ok(Received {
                raw: body.to_vec(),
                xml,
                attachments: Vec::new(),
                mtom: false,
                charset: ct.param("charset").map(str::to_owned),
            })
        }
        _ => Err(XRoadError::UnsupportedType(ct.raw_essence())),
    }
}

struct ContentType {
    essence: String,
    params: Vec<(String, String)>,
}

impl ContentType {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn raw_essence(&self) -> String {
        self.essence.clone()
    }
}

fn parse_type(value: &str) -> Result<ContentType, XRoadError> {
    let m: ::mime::Mime = value.trim().parse().map_err(|e: ::mime::FromStrError| {
        XRoadError::ContentType(value.to_owned(), e.to_string())
    })?;
    Ok(ContentType {
        essence: m.essence_str().to_ascii_lowercase(),
        params: m
            .params()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect(),
    })
}

/// The labels of ISO-8859-1 proper. (encoding_rs reads them as
/// windows-1252, as browsers do; a SOAP message is not a web page, so the
/// bytes 0x80–0x9F stay the C1 characters ISO-8859-1 says they are.)
const LATIN1: &[&str] = &[
    "iso-8859-1",
    "iso8859-1",
    "iso_8859-1",
    "iso_8859-1:1987",
    "latin1",
    "l1",
    "cp819",
    "ibm819",
    "iso-ir-100",
    "csisolatin1",
];

/// The encoding an XML declaration names, if any.
fn declared(text: &[u8]) -> Option<String> {
    let t = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    if !t.starts_with(b"<?xml") {
        return None;
    }
    let end = memchr::memmem::find(t, b"?>")?;
    let decl = std::str::from_utf8(&t[..end]).ok()?;
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let q = rest.chars().next()?;
    if q != '"' && q != '\'' {
        return None;
    }
    let rest = &rest[1..];
    Some(rest[..rest.find(q)?].to_owned())
}

/// The XML as UTF-8: decoded by `charset` (else by its declaration, else
/// as UTF-8), the byte order mark gone, and a declaration that names
/// another encoding rewritten to say UTF-8, so that the hardened reader,
/// which reads UTF-8 only, takes it.
pub(super) fn to_utf8(bytes: &[u8], charset: Option<&str>) -> Result<Vec<u8>, XRoadError> {
    let text = text_of(bytes, charset)?;
    if !text.starts_with("<?xml") || declared(text.as_bytes()).is_none() {
        return Ok(text.into_bytes());
    }
    // Rewrite the declaration: the rest stays exactly as it was.
    let end = text.find("?>").map_or(0, |e| e + 2);
    let standalone = if text[..end].contains("standalone") {
        " standalone=\"yes\""
    } else {
        ""
    };
    let mut out = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"{standalone}?>").into_bytes();
    out.extend_from_slice(&text.as_bytes()[end..]);
    Ok(out)
}

/// The XML's text: decoded by `charset` (else by its declaration, else as
/// UTF-8), the byte order mark gone, the declaration left as it was.
pub(super) fn text_of(bytes: &[u8], charset: Option<&str>) -> Result<String, XRoadError> {
    let label = charset
        .map(|c| c.trim().to_owned())
        .or_else(|| declared(bytes))
        .unwrap_or_else(|| "utf-8".into());
    let lower = label.to_ascii_lowercase();
    let text: String = if LATIN1.contains(&lower.as_str()) {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        let enc = encoding_rs::Encoding::for_label(label.as_bytes())
            .ok_or_else(|| XRoadError::Charset(label.clone()))?;
        // A byte order mark wins over the label, as XML says; it is dropped.
        let (text, used, bad) = enc.decode(bytes);
        if bad {
            return Err(XRoadError::Undecodable(used.name().to_owned()));
        }
        text.into_owned()
    };
    Ok(text
        .strip_prefix('\u{FEFF}')
        .map_or(text.clone(), str::to_owned))
}

/// One part of a multipart body.
struct Part<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

impl Part<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_id(&self) -> Option<String> {
        self.header("Content-ID").map(|v| {
            let v = v.trim();
            v.strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .unwrap_or(v)
                .to_owned()
        })
    }

    /// The body with its transfer encoding undone.
    fn decoded(&self, which: &str) -> Result<Vec<u8>, XRoadError> {
        let enc = self
            .header("Content-Transfer-Encoding")
            .unwrap_or("binary")
            .trim()
            .to_ascii_lowercase();
        match enc.as_str() {
            "binary" | "8bit" | "7bit" => Ok(self.body.to_vec()),
            "base64" => {
                let clean: Vec<u8> = self
                    .body
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(&clean)
                    .map_err(|e| XRoadError::Multipart(format!("{which}: bad base64: {e}")))
            }
            "quoted-printable" => {
                quoted_printable::decode(self.body, quoted_printable::ParseMode::Robust).map_err(
                    |e| XRoadError::Multipart(format!("{which}: bad quoted-printable: {e}")),
                )
            }
            other => Err(XRoadError::Multipart(format!(
                "{which}: unknown Content-Transfer-Encoding {other:?}"
            ))),
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(hay.get(from..)?, needle).map(|i| i + from)
}

/// Splits a multipart body (RFC 2046): parts between `--boundary` lines,
/// the last closed by `--boundary--`. Line ends CRLF, or LF alone as some
/// servers write them.
fn split<'a>(
    body: &'a [u8],
    boundary: &str,
    limits: &ReceiveLimits,
) -> Result<Vec<Part<'a>>, XRoadError> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    // The first delimiter: at the very start, or after a line end.
    let mut at = if body.starts_with(d) {
        0
    } else {
        find(body, &[b"\n", d].concat(), 0)
            .map(|i| i + 1)
            .ok_or_else(|| {
                XRoadError::Multipart(format!("the boundary {boundary:?} is not in the body"))
            })?
    };
    let mut parts = Vec::new();
    loop {
        let after = at + d.len();
        if body[after..].starts_with(b"--") {
            return if parts.is_empty() {
                Err(XRoadError::Multipart(
                    "no part before the closing boundary".into(),
                ))
            } else {
                Ok(parts)
            };
        }
        // The rest of the delimiter line (transport padding), then the line end.
        let eol = find(body, b"\n", after).ok_or_else(|| {
            XRoadError::Multipart("unterminated: the body ends in a boundary line".into())
        })?;
        if !body[after..eol]
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r'))
        {
            return Err(XRoadError::Multipart(format!(
                "a boundary line is followed by {:?}",
                String::from_utf8_lossy(&body[after..eol.min(after + 40)])
            )));
        }
        if parts.len() == limits.max_parts {
            return Err(XRoadError::Multipart(format!(
                "more than {} parts",
                limits.max_parts
            )));
        }
        let start = eol + 1;
        // Headers end at the first empty line.
        let mut headers = Vec::new();
        let mut pos = start;
        loop {
            if pos - start > limits.max_header_bytes {
                return Err(XRoadError::Multipart(format!(
                    "part {}: headers longer than {} bytes",
                    parts.len() + 1,
                    limits.max_header_bytes
                )));
            }
            let end = find(body, b"\n", pos).ok_or_else(|| {
                XRoadError::Multipart(format!(
                    "unterminated: part {} ends in its headers",
                    parts.len() + 1
                ))
            })?;
            if end - start > limits.max_header_bytes {
                return Err(XRoadError::Multipart(format!(
                    "part {}: headers longer than {} bytes",
                    parts.len() + 1,
                    limits.max_header_bytes
                )));
            }
            let line = body[pos..end]
                .strip_suffix(b"\r")
                .unwrap_or(&body[pos..end]);
            pos = end + 1;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(line);
            if line.starts_with([' ', '\t']) {
                // A folded header goes on the previous one.
                match headers.last_mut() {
                    Some((_, v)) => {
                        let v: &mut String = v;
                        v.push(' ');
                        v.push_str(line.trim());
                    }
                    None => {
                        return Err(XRoadError::Multipart(format!(
                            "part {}: a continuation line without a header",
                            parts.len() + 1
                        )))
                    }
                }
                continue;
            }
            let (k, v) = line.split_once(':').ok_or_else(|| {
                XRoadError::Multipart(format!(
                    "part {}: a header line without a colon: {:?}",
                    parts.len() + 1,
                    line.chars().take(40).collect::<String>()
                ))
            })?;
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        // The body ends at the line end before the next delimiter (the
        // empty line's own line end when the body is empty).
        let next = find(body, &[b"\n", d].concat(), pos - 1).ok_or_else(|| {
            XRoadError::Multipart(format!(
                "unterminated: part {} has no closing boundary",
                parts.len() + 1
            ))
        })?;
        let content_end = if next > pos && body[next - 1] == b'\r' {
            next - 1
        } else {
            next.max(pos)
        };
        parts.push(Part {
            headers,
            body: &body[pos..content_end],
        });
        at = next + 1;
    }
}

fn multipart(
    ct: &ContentType,
    body: &[u8],
    limits: &ReceiveLimits,
) -> Result<Received, XRoadError> {
    let named = ct
        .params
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .count();
    if named > 1 {
        return Err(XRoadError::Multipart(format!(
            "the Content-Type names {named} boundaries"
        )));
    }
    let boundary = ct
        .param("boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| XRoadError::Multipart("the Content-Type names no boundary".into()))?;
    if boundary.len() > 70 {
        return Err(XRoadError::Multipart(format!(
            "a boundary of {} characters (at most 70)",
            boundary.len()
        )));
    }
    let parts = split(body, boundary, limits)?;
    // The SOAP part: the one `start` names, else the first.
    let root = match ct.param("start") {
        Some(start) => {
            let want = start.trim().trim_start_matches('<').trim_end_matches('>');
            let hits: Vec<usize> = (0..parts.len())
                .filter(|&i| parts[i].content_id().as_deref() == Some(want))
                .collect();
            match hits.as_slice() {
                [one] => *one,
                [] => {
                    return Err(XRoadError::Multipart(format!(
                        "no part has the Content-ID {start:?} that start names"
                    )))
                }
                _ => {
                    return Err(XRoadError::Multipart(format!(
                        "{} parts have the Content-ID {start:?}",
                        hits.len()
                    )))
                }
            }
        }
        None => 0,
    };
    let soap = &parts[root];
    let soap_type = match soap.header("Content-Type") {
        Some(t) => parse_type(t)?,
        None => {
            return Err(XRoadError::Multipart(
                "the SOAP part has no Content-Type".into(),
            ))
        }
    };
    let mtom =
        match soap_type.essence.as_str() {
            "text/xml" | "application/soap+xml" => false,
            "application/xop+xml" => true,
            other => {
                return Err(XRoadError::Multipart(format!(
                "the {} part is {other}, not the SOAP message (text/xml or application/xop+xml){}",
                if ct.param("start").is_some() { "start" } else { "first" },
                if ct.param("start").is_none() {
                    "; the SOAP part must come first or be named by start"
                } else {
                    ""
                }
            )))
            }
        };
    let raw = soap.decoded("the SOAP part")?;
    let mut attachments = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i == root {
            continue;
        }
        let which = format!("part {}", i + 1);
        let ptype = p.header("Content-Type").map(str::to_owned);
        let name = p
            .header("Content-Disposition")
            .and_then(disposition_name)
            .or_else(|| {
                ptype
                    .as_deref()
                    .and_then(|t| parse_type(t).ok())
                    .and_then(|t| t.param("name").map(str::to_owned))
            });
        attachments.push(Attachment {
            content_id: p.content_id().unwrap_or_default(),
            content_type: ptype.unwrap_or_else(|| "application/octet-stream".into()),
            name,
            bytes: p.decoded(&which)?,
        });
    }
    let mut xml = to_utf8(&raw, soap_type.param("charset"))?;
    if mtom {
        xml = resolve_xop(&xml, &attachments, limits)?;
    }
    Ok(Received {
        raw,
        xml,
        attachments,
        mtom,
        charset: soap_type.param("charset").map(str::to_owned),
    })
}

/// `filename` (else `name`) of a `Content-Disposition`.
fn disposition_name(d: &str) -> Option<String> {
    let mut name = None;
    for p in d.split(';').skip(1) {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "filename" => return Some(v),
            "name" => name = Some(v),
            _ => {}
        }
    }
    name
}

/// `%XX` escapes of a `cid:` URL undone (RFC 2392).
fn unpercent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every `xop:Include` replaced by its part's bytes in base64, the rest
/// of the text as it was (the hardened reader's byte spans say where).
fn resolve_xop(
    xml: &[u8],
    attachments: &[Attachment],
    limits: &ReceiveLimits,
) -> Result<Vec<u8>, XRoadError> {
    let doc = Document::parse(xml, &limits.xml)
        .map_err(|e| XRoadError::Mtom(format!("the SOAP part is not XML: {e}")))?;
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    for n in doc.find_all(XOP, "Include") {
        let Some(e) = doc.element(n) else { continue };
        let href = doc
            .attr(n, "href")
            .map(|h| h.trim().to_owned())
            .ok_or_else(|| XRoadError::Mtom("xop:Include has no href".into()))?;
        let (start, end) = (e.start_span.0, e.end_span.1);
        // One inside another is replaced with it.
        if spans
            .last()
            .is_some_and(|(_, last_end, _)| start < *last_end)
        {
            continue;
        }
        spans.push((start, end, href));
    }
    let mut out = Vec::with_capacity(xml.len());
    let mut last = 0;
    for (start, end, href) in spans {
        let cid = href.strip_prefix("cid:").ok_or_else(|| {
            XRoadError::Mtom(format!("xop:Include href {href:?} is not a cid: URL"))
        })?;
        let cid = unpercent(cid);
        let a = attachments
            .iter()
            .find(|a| a.content_id == cid)
            .ok_or_else(|| {
                XRoadError::Mtom(format!("xop:Include names cid:{cid}, which no part has"))
            })?;
        let (Some(before), Some(_)) = (xml.get(last..start), xml.get(start..end)) else {
            return Err(XRoadError::Mtom("xop:Include out of place".into()));
        };
        // Counted before it is made.
        let grown = (out.len() + before.len())
            .saturating_add(base64::encoded_len(a.bytes.len(), true).unwrap_or(usize::MAX));
        if grown > limits.max_resolved {
            return Err(XRoadError::Mtom(format!(
                "the message with its xop:Include parts resolved is larger than {} bytes",
                limits.max_resolved
            )));
        }
        out.extend_from_slice(before);
        let mut b64 = String::with_capacity(grown - out.len());
        base64::engine::general_purpose::STANDARD.encode_string(&a.bytes, &mut b64);
        out.extend_from_slice(b64.as_bytes());
        last = end;
    }
    out.extend_from_slice(xml.get(last..).unwrap_or_default());
    Ok(out)
}
