//! How certificates and their names are written (hex digests, RFC 4514
//! names) and pinned (a signer's subject, a certificate's SHA-256).

use openssl::x509::X509Ref;

/// Bytes as lowercase hex, as records and reports write digests.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The SHA-256 of a certificate's DER, in hex: how records, dossiers and
/// pins name one certificate. `None` only if openssl cannot encode what
/// it parsed.
pub fn cert_sha256(c: &X509Ref) -> Option<String> {
    c.to_der().ok().map(|d| hex(&openssl::sha::sha256(&d)))
}

/// A name as RFC 4514 writes it, most specific first, every special
/// character escaped (a comma inside a value is `\,`, a NUL `\00`), so
/// that a refused subject is never shown as if it were the pin.
pub fn rfc4514(n: &openssl::x509::X509NameRef) -> String {
    let mut parts: Vec<String> = n
        .entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?").to_owned();
            let raw = e.data().as_slice();
            let text = String::from_utf8_lossy(raw);
            let last = text.chars().count().saturating_sub(1);
            let mut v = String::new();
            for (i, ch) in text.chars().enumerate() {
                match ch {
                    ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                        v.push('\\');
                        v.push(ch);
                    }
                    '#' | ' ' if i == 0 => {
                        v.push('\\');
                        v.push(ch);
                    }
                    ' ' if i == last => v.push_str("\\ "),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        v.push_str(&format!("\\{:02X}", c as u32))
                    }
                    c => v.push(c),
                }
            }
            format!("{k}={v}")
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

/// A pinned distinguished name, written as RFC 4514 says (what `openssl
/// x509 -noout -subject -nameopt RFC2253` prints): the most specific RDN
/// first, `CN=cadastre signer,O=Republic Geodetic Authority,C=RS`, types
/// as short names (`CN`, `O`, `OU`, `C`, `L`, `ST`, `serialNumber`, ...)
/// or dotted OIDs, `\,` `\+` `\"` `\\` and `\XX` escapes, `+` between
/// the attributes of one RDN; a space after a separator is allowed. A
/// name matches when it has the same attributes, in the same order, with
/// exactly the same values: `CN=cadastre signer` matches neither
/// `CN=cadastre signer2` nor `CN=cadastre signer,O=Other`.
#[derive(Debug, Clone)]
pub struct NamePin {
    text: String,
    /// The attributes in the certificate's (DER) order: (type, value),
    /// the type as openssl names its OID (one name per OID).
    avas: Vec<(String, String)>,
    /// How many of them each RDN holds, in the same order: `CN=a+O=b` is
    /// one RDN of two, not two RDNs of one.
    groups: Vec<usize>,
}

impl std::fmt::Display for NamePin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for NamePin {
    type Err = String;
    fn from_str(s: &str) -> Result<NamePin, String> {
        NamePin::parse(s)
    }
}

impl NamePin {
    /// Reads a pin; what is wrong with it, precisely, if it does not read.
    pub fn parse(text: &str) -> Result<NamePin, String> {
        if text.trim().is_empty() {
            return Err("an empty name".into());
        }
        let mut rdns = Vec::new();
        for rdn in split_unescaped(text, ',')? {
            let mut avas = Vec::new();
            for ava in split_unescaped(&rdn, '+')? {
                let ava = ava.trim_start();
                let (ty, value) = ava
                    .split_once('=')
                    .ok_or_else(|| format!("{ava:?} is not TYPE=value"))?;
                let ty = ty.trim();
                if ty.is_empty() {
                    return Err(format!("{ava:?} has no attribute type"));
                }
                let obj = openssl::asn1::Asn1Object::from_str(ty)
                    .map_err(|_| format!("unknown attribute type {ty:?}"))?;
                if value.starts_with('#') {
                    return Err(format!(
                        "{ava:?}: a value written as #hex (BER) is not accepted; write it as text"
                    ));
                }
                let value = unescape(trim_unescaped_end(value))?;
                if value.is_empty() {
                    return Err(format!("{ava:?} has an empty value"));
                }
                avas.push((obj.to_string(), value));
            }
            rdns.push(avas);
        }
        // RFC 4514 writes the last RDN of the sequence first.
        rdns.reverse();
        Ok(NamePin {
            text: text.to_owned(),
            groups: rdns.iter().map(Vec::len).collect(),
            avas: rdns.into_iter().flatten().collect(),
        })
    }

    /// Is `name` exactly this one?
    #[allow(deprecated)] // as_utf8: a name with interior NULs does not match
    pub fn matches(&self, name: &openssl::x509::X509NameRef) -> bool {
        use der::Decode;
        let groups = name
            .to_der()
            .ok()
            .and_then(|d| x509_cert::name::Name::from_der(&d).ok())
            .map(|n| n.0.iter().map(|rdn| rdn.0.len()).collect::<Vec<_>>());
        if groups.as_ref() != Some(&self.groups) {
            return false;
        }
        let mut entries = name.entries();
        for (oid, value) in &self.avas {
            let Some(e) = entries.next() else {
                return false;
            };
            if e.object().to_string() != *oid {
                return false;
            }
            // openssl hands the value over as a C string: a NUL inside
            // would end it early, and `CN=signer\0evil` read as `signer`.
            if e.data().as_slice().contains(&0) {
                return false;
            }
            match e.data().as_utf8() {
                Ok(v) if v.to_string() == *value => {}
                _ => return false,
            }
        }
        entries.next().is_none()
    }
}

/// A certificate pin: 64 hex digits of the SHA-256 of its DER, upper or
/// lower case, with or without colons between the bytes (as `openssl x509
/// -noout -fingerprint -sha256` prints it).
pub fn parse_sha256_pin(text: &str) -> Result<[u8; 32], String> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{text:?} is not a SHA-256 (64 hex digits, colons allowed)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
            .map_err(|e| format!("{text:?}: {e}"))?;
    }
    Ok(out)
}

/// `s` cut at each `sep` not escaped by a backslash (escapes kept).
fn split_unescaped(s: &str, sep: char) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let n = chars
                    .next()
                    .ok_or_else(|| format!("{s:?} ends with a lone backslash"))?;
                let last = out.last_mut().expect("never empty");
                last.push('\\');
                last.push(n);
            }
            c if c == sep => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    if out.iter().any(|p| p.trim().is_empty()) {
        return Err(format!(
            "{s:?} has an empty part between {sep:?} separators"
        ));
    }
    Ok(out)
}

/// `s` without its trailing spaces, unless the last is escaped.
fn trim_unescaped_end(s: &str) -> &str {
    let t = s.trim_end();
    if t.ends_with('\\') && t.len() < s.len() {
        &s[..t.len() + 1]
    } else {
        t
    }
}

/// RFC 4514 escapes undone: `\c` for a special character, `\XX` for a
/// byte of UTF-8.
fn unescape(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            bytes.push(b[i]);
            i += 1;
            continue;
        }
        let rest = &b[i + 1..];
        match rest {
            [h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let hex = [*h, *l];
                let hex = std::str::from_utf8(&hex).map_err(|e| e.to_string())?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                i += 3;
            }
            [c, ..] if b" \"#+,;<=>\\".contains(c) => {
                bytes.push(*c);
                i += 2;
            }
            _ => {
                return Err(format!(
                    "{s:?} has a backslash before nothing it may escape"
                ))
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{s:?}: its \\XX escapes are not UTF-8"))
}

#[allow(deprecated)] // as_utf8: names with interior NULs are not ours to show
pub fn name_to_string(n: &openssl::x509::X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?");
            let v = e
                .data()
                .as_utf8()
                .map(|s| s.to_string())
                .unwrap_or_default();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::{parse_sha256_pin, NamePin};

    fn name(entries: &[(&str, &str)]) -> openssl::x509::X509Name {
        let mut b = openssl::x509::X509NameBuilder::new().unwrap();
        for (k, v) in entries {
            b.append_entry_by_text(k, v).unwrap();
        }
        b.build()
    }

    #[test]
    fn a_subject_pin_is_the_whole_name_exactly() {
        let signer = name(&[
            ("C", "RS"),
            ("O", "RGZ, Beograd"),
            ("CN", "cadastre signer"),
        ]);
        for ok in [
            "CN=cadastre signer,O=RGZ\\, Beograd,C=RS",
            "CN=cadastre signer, O=RGZ\\2C Beograd, C=RS",
            "commonName=cadastre signer,2.5.4.10=RGZ\\, Beograd,C=RS",
        ] {
            assert!(NamePin::parse(ok).unwrap().matches(&signer), "{ok}");
        }
        for no in [
            "CN=cadastre signer",
            "CN=cadastre signer2,O=RGZ\\, Beograd,C=RS",
            "CN=cadastre signe,O=RGZ\\, Beograd,C=RS",
            "C=RS,O=RGZ\\, Beograd,CN=cadastre signer",
            "CN=cadastre signer,O=RGZ\\, Beograd,C=RS,DC=x",
            "CN=Cadastre signer,O=RGZ\\, Beograd,C=RS",
        ] {
            assert!(!NamePin::parse(no).unwrap().matches(&signer), "{no}");
        }
        // A NUL inside a value (which openssl's C strings would end at):
        // `CN=cadastre signer\0evil` is not `CN=cadastre signer`.
        let utf8 = |v: &[u8]| {
            let mut atv = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, v.len() as u8];
            atv.extend_from_slice(v);
            let mut seq = vec![0x30, atv.len() as u8];
            seq.extend(atv);
            let mut set = vec![0x31, seq.len() as u8];
            set.extend(seq);
            let mut name = vec![0x30, set.len() as u8];
            name.extend(set);
            openssl::x509::X509Name::from_der(&name).unwrap()
        };
        assert!(NamePin::parse("CN=cadastre signer")
            .unwrap()
            .matches(&utf8(b"cadastre signer")));
        for evil in [&b"cadastre signer\0evil"[..], b"cadastre signer\0"] {
            assert!(!NamePin::parse("CN=cadastre signer")
                .unwrap()
                .matches(&utf8(evil)));
        }
        // A refused subject is shown escaped, never as if it were a pin.
        let lookalike = name(&[("CN", "civil signer,O=jum-gateway development")]);
        assert_eq!(
            super::rfc4514(&lookalike),
            "CN=civil signer\\,O\\=jum-gateway development"
        );
        assert_eq!(super::rfc4514(&utf8(b"a\0b ")), "CN=a\\00b\\ ");
        assert_eq!(
            super::rfc4514(&signer),
            "CN=cadastre signer,O=RGZ\\, Beograd,C=RS"
        );
        // RDN boundaries count: one RDN of two attributes is not two RDNs.
        let multi = {
            let ava = |oid: u8, v: &[u8]| {
                let mut a = vec![0x06, 0x03, 0x55, 0x04, oid, 0x0c, v.len() as u8];
                a.extend_from_slice(v);
                let mut seq = vec![0x30, a.len() as u8];
                seq.extend(a);
                seq
            };
            let both = [ava(3, b"x"), ava(10, b"y")].concat();
            let mut set = vec![0x31, both.len() as u8];
            set.extend(both);
            let mut name = vec![0x30, set.len() as u8];
            name.extend(set);
            openssl::x509::X509Name::from_der(&name).unwrap()
        };
        assert!(NamePin::parse("CN=x+O=y").unwrap().matches(&multi));
        for no in ["O=y,CN=x", "CN=x,O=y"] {
            assert!(!NamePin::parse(no).unwrap().matches(&multi), "{no}");
        }
        assert!(!NamePin::parse("CN=x+O=y")
            .unwrap()
            .matches(&name(&[("O", "y"), ("CN", "x")])));
        let short = name(&[("CN", "cadastre signer2")]);
        assert!(!NamePin::parse("CN=cadastre signer")
            .unwrap()
            .matches(&short));
        for (bad, says) in [
            ("", "empty name"),
            ("cadastre signer", "is not TYPE=value"),
            ("CN=a,,O=b", "empty part"),
            ("XX=a", "unknown attribute type"),
            ("CN=", "empty value"),
            ("CN=#0403616263", "#hex"),
            ("CN=a\\", "lone backslash"),
            ("CN=a\\q", "backslash before nothing"),
        ] {
            let e = NamePin::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        /// Whatever a configuration says, a pin is read or refused with a
        /// message, never a panic; one that reads matches a name built
        /// from its own text only if it reads back the same.
        #[test]
        fn any_text_is_a_pin_or_refused(text in "[ -~]{0,60}") {
            match NamePin::parse(&text) {
                Ok(p) => proptest::prop_assert_eq!(p.to_string(), text.clone()),
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
            let _ = parse_sha256_pin(&text);
        }

        /// Any name, its values escaped as RFC 4514 says, is pinned by
        /// that text, and by no other value.
        #[test]
        fn a_name_is_pinned_by_its_escaped_text(cn in "[ -~]{1,20}", o in "[ -~]{1,20}") {
            let esc = |v: &str| {
                let mut out = String::new();
                for (i, c) in v.chars().enumerate() {
                    let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.len() && c == ' ');
                    if edge || ",+\"\\<>;=".contains(c) {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out
            };
            let n = name(&[("O", &o), ("CN", &cn)]);
            let text = format!("CN={},O={}", esc(&cn), esc(&o));
            let pin = NamePin::parse(&text);
            proptest::prop_assert!(pin.as_ref().is_ok_and(|p| p.matches(&n)), "{text:?}: {pin:?}");
            let other = name(&[("O", &o), ("CN", &format!("{cn}x"))]);
            proptest::prop_assert!(!pin.unwrap().matches(&other));
        }
    }

    #[test]
    fn a_certificate_pin_is_64_hex_digits_colons_allowed() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_sha256_pin(&hex).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256_pin(&colons).unwrap(), [0xab; 32]);
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            let e = parse_sha256_pin(bad).unwrap_err();
            assert!(e.contains("64 hex digits"), "{bad}: {e}");
        }
    }
}
