//! The limits of what a back-office files, taken from where each field
//! ends up, so that what can never be sent or delivered is refused at the
//! door (422, naming the field) instead of being accepted and failing at
//! signing, at the registry or at delivery, again and again:
//!
//! - the case number becomes `xrd:issue` (at most 255 characters) and a
//!   folder name (at most 255 bytes once encoded, see
//!   [`case_folder`](crate::delivery::case_folder));
//! - the official becomes `xrd:userId` (255 characters);
//! - the legal basis and the purpose become `jum:legalBasis` and
//!   `jum:purpose` (1000 characters);
//! - all of them are XML text, which cannot hold control characters other
//!   than tab and line breaks, nor the noncharacters U+FFFE and U+FFFF;
//!   the two one-line fields hold no tab or line break either.
//!
//! Every field is taken in Unicode NFC, so that the same case number or
//! name typed on two keyboards (a precomposed `č` or `c` with a combining
//! caron) is one case and one official.

use unicode_normalization::UnicodeNormalization;

/// Where a field ends up, and what that holds.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Characters (the schema's `maxLength` counts characters).
    pub max_chars: usize,
    /// May hold tabs and line breaks.
    pub lines: bool,
    /// Where it goes, for the message.
    pub into: &'static str,
}

pub const CASE_NUMBER: Limit = Limit {
    max_chars: 255,
    lines: false,
    into: "xrd:issue",
};
pub const OFFICIAL: Limit = Limit {
    max_chars: 255,
    lines: false,
    into: "xrd:userId",
};
pub const LEGAL_BASIS: Limit = Limit {
    max_chars: 1000,
    lines: true,
    into: "jum:legalBasis",
};
pub const PURPOSE: Limit = Limit {
    max_chars: 1000,
    lines: true,
    into: "jum:purpose",
};

/// The longest folder name most file systems hold (ext4, XFS, NTFS, SMB).
pub const MAX_FOLDER_BYTES: usize = 255;

/// Why a field is refused, or `None` if it is fine.
pub fn problem(v: &str, limit: Limit) -> Option<String> {
    if v.trim().is_empty() {
        return Some("must not be empty".into());
    }
    let n = v.chars().count();
    if n > limit.max_chars {
        return Some(format!(
            "{n} characters; at most {} fit in {}",
            limit.max_chars, limit.into
        ));
    }
    if let Some((i, c)) = v
        .chars()
        .enumerate()
        .find(|(_, c)| !allowed(*c, limit.lines))
    {
        return Some(format!(
            "character {} is U+{:04X}, which {} cannot hold{}",
            i + 1,
            c as u32,
            limit.into,
            if limit.lines {
                ""
            } else {
                " (one line of text)"
            }
        ));
    }
    None
}

/// Can XML text (and a one-line field, without `lines`) hold `c`?
fn allowed(c: char, lines: bool) -> bool {
    match c {
        '\t' | '\n' | '\r' => lines,
        '\u{FFFE}' | '\u{FFFF}' => false,
        c => !c.is_control(),
    }
}

/// Checks a field in NFC and returns it so, with any problem pushed to
/// `errs` under `pointer`.
pub fn check(errs: &mut Vec<(String, String)>, pointer: &str, v: &str, limit: Limit) -> String {
    let v: String = v.nfc().collect();
    if let Some(p) = problem(&v, limit) {
        errs.push((pointer.into(), p));
    }
    v
}

/// A case number: as [`check`], and its folder name must fit.
pub fn case_number(errs: &mut Vec<(String, String)>, pointer: &str, v: &str) -> String {
    let before = errs.len();
    let v = check(errs, pointer, v, CASE_NUMBER);
    if errs.len() == before {
        let folder = crate::delivery::case_folder(&v).len();
        if folder > MAX_FOLDER_BYTES {
            errs.push((
                pointer.into(),
                format!(
                    "its case folder's name would be {folder} bytes (characters other than \
                     letters, digits, '-', '_' and '.' take three each); at most {MAX_FOLDER_BYTES} fit"
                ),
            ));
        }
    }
    v
}

/// A case number as it is looked up (a path of the API): in NFC, as it
/// was stored.
pub fn case_key(v: &str) -> String {
    v.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn what_cannot_be_sent_or_delivered_is_named() {
        let p = |v: &str, l| problem(v, l);
        assert_eq!(p("351-12/2026-IV", CASE_NUMBER), None);
        assert!(p(&"a".repeat(256), CASE_NUMBER)
            .unwrap()
            .contains("256 characters"));
        assert_eq!(p(&"a".repeat(255), CASE_NUMBER), None);
        for c in [
            '\u{1}', '\u{1F}', '\u{7F}', '\u{FFFE}', '\u{FFFF}', '\u{85}',
        ] {
            let v = format!("351{c}12");
            let why = p(&v, PURPOSE).unwrap();
            assert!(why.contains(&format!("U+{:04X}", c as u32)), "{why}");
            assert!(why.contains("character 4"), "{why}");
        }
        assert!(p("a\nb", OFFICIAL).is_some());
        assert_eq!(p("a\nb\tc", PURPOSE), None);
        let mut errs = Vec::new();
        case_number(&mut errs, "/case/number", &"/".repeat(100));
        assert!(errs[0].1.contains("300 bytes"), "{errs:?}");
        errs.clear();
        case_number(&mut errs, "/case/number", &"Ж".repeat(128));
        assert!(errs[0].1.contains("256 bytes"), "{errs:?}");
        errs.clear();
        assert_eq!(case_number(&mut errs, "/c", "Kovac\u{30C}"), "Kovač");
        assert!(errs.is_empty());
    }

    proptest! {
        /// Whatever is accepted can be written as XML text within its
        /// schema's length and as a folder name within 255 bytes.
        #[test]
        fn what_is_accepted_fits_where_it_goes(v in "\\PC{0,300}|[\\x00-\\x20/Жč\u{FFFE}]{0,300}|.{0,300}") {
            let mut errs = Vec::new();
            let got = case_number(&mut errs, "/case/number", &v);
            if errs.is_empty() {
                prop_assert!(got.chars().count() <= 255);
                prop_assert!(crate::delivery::case_folder(&got).len() <= MAX_FOLDER_BYTES);
                prop_assert!(got.chars().all(|c| allowed(c, false)));
                let xml = format!("<a>{}</a>", crate::xml::escape(&got));
                let read = crate::xml::dom::Document::parse(xml.as_bytes(), &crate::xml::Limits::default());
                prop_assert!(read.is_ok(), "{:?}", read.err());
            } else {
                prop_assert_eq!(errs.len(), 1);
            }
        }
    }
}
