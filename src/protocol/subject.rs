//! Whom or what a request is about, already validated.

use crate::ids::{redact_jmbg, IdError, Jmbg, KoCode, Mb, ParcelNumber, Pib, SheetNumber};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Jmbg(Jmbg),
    Pib(Pib),
    Mb(Mb),
    KoSheet(KoCode, SheetNumber),
    KoParcel(KoCode, ParcelNumber),
    /// Property sheets of an owner, by JMBG, within a KO.
    KoJmbg(KoCode, Jmbg),
    /// Property sheets of an owner, by MB, within a KO.
    KoMb(KoCode, Mb),
}

impl Subject {
    /// The kind as written in the service catalogue.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Jmbg(_) => "jmbg",
            Subject::Pib(_) => "pib",
            Subject::Mb(_) => "mb",
            Subject::KoSheet(..) => "ko+sheet",
            Subject::KoParcel(..) => "ko+parcel",
            Subject::KoJmbg(..) => "ko+jmbg",
            Subject::KoMb(..) => "ko+mb",
        }
    }

    /// The payload fields in schema order, by field name.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Subject::Jmbg(j) => vec![("jmbg", j.as_str().to_owned())],
            Subject::Pib(p) => vec![("pib", p.to_string())],
            Subject::Mb(m) => vec![("mb", m.to_string())],
            Subject::KoSheet(k, s) => vec![("ko", k.to_string()), ("sheet", s.0.to_string())],
            Subject::KoParcel(k, p) => vec![("ko", k.to_string()), ("parcel", p.to_string())],
            Subject::KoJmbg(k, j) => vec![("ko", k.to_string()), ("jmbg", j.as_str().to_owned())],
            Subject::KoMb(k, m) => vec![("ko", k.to_string()), ("mb", m.to_string())],
        }
    }

    /// For logs and lists: JMBGs masked, business identifiers in clear.
    pub fn redacted(&self) -> String {
        self.fields()
            .into_iter()
            .map(|(k, v)| {
                if k == "jmbg" {
                    format!("{k}={}", redact_jmbg(&v))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Builds a subject from optional parts as a CLI or API gives them:
    /// the first field that does not parse (the KO first), or the
    /// combination, is the error.
    pub fn from_parts(
        jmbg: Option<&str>,
        pib: Option<&str>,
        mb: Option<&str>,
        ko: Option<&str>,
        sheet: Option<&str>,
        parcel: Option<&str>,
    ) -> Result<Subject, SubjectError> {
        let (parts, mut bad) = Parts::parse(jmbg, pib, mb, ko, sheet, parcel);
        if !bad.is_empty() {
            let first = bad.iter().position(|(f, _)| *f == "ko").unwrap_or(0);
            let (field, e) = bad.swap_remove(first);
            return Err(SubjectError::Field(field, e));
        }
        Subject::from_parsed(parts)
    }

    /// The subject the parsed fields make, if they make one.
    pub fn from_parsed(p: Parts) -> Result<Subject, SubjectError> {
        Ok(match (p.ko, p.jmbg, p.pib, p.mb, p.sheet, p.parcel) {
            (None, Some(j), None, None, None, None) => Subject::Jmbg(j),
            (None, None, Some(p), None, None, None) => Subject::Pib(p),
            (None, None, None, Some(m), None, None) => Subject::Mb(m),
            (Some(k), None, None, None, Some(s), None) => Subject::KoSheet(k, s),
            (Some(k), None, None, None, None, Some(p)) => Subject::KoParcel(k, p),
            (Some(k), Some(j), None, None, None, None) => Subject::KoJmbg(k, j),
            (Some(k), None, None, Some(m), None, None) => Subject::KoMb(k, m),
            _ => return Err(SubjectError::Combination),
        })
    }
}

/// A subject's identifiers, each parsed on its own: what the API checks
/// field by field (naming every field that is wrong) before it asks
/// whether they make a subject, so that nothing is parsed twice.
#[derive(Debug, Default)]
pub struct Parts {
    pub jmbg: Option<Jmbg>,
    pub pib: Option<Pib>,
    pub mb: Option<Mb>,
    pub ko: Option<KoCode>,
    pub sheet: Option<SheetNumber>,
    pub parcel: Option<ParcelNumber>,
}

impl Parts {
    /// Each field given, parsed; those that do not parse, by name, in the
    /// order jmbg, pib, mb, ko, sheet, parcel.
    pub fn parse(
        jmbg: Option<&str>,
        pib: Option<&str>,
        mb: Option<&str>,
        ko: Option<&str>,
        sheet: Option<&str>,
        parcel: Option<&str>,
    ) -> (Parts, Vec<(&'static str, IdError)>) {
        let mut bad = Vec::new();
        // Fields are read in the order written, and so are their errors.
        let parts = Parts {
            jmbg: field(&mut bad, "jmbg", jmbg, Jmbg::parse),
            pib: field(&mut bad, "pib", pib, Pib::parse),
            mb: field(&mut bad, "mb", mb, Mb::parse),
            ko: field(&mut bad, "ko", ko, KoCode::parse),
            sheet: field(&mut bad, "sheet", sheet, SheetNumber::parse),
            parcel: field(&mut bad, "parcel", parcel, ParcelNumber::parse),
        };
        (parts, bad)
    }
}

fn field<T>(
    bad: &mut Vec<(&'static str, IdError)>,
    name: &'static str,
    value: Option<&str>,
    parse: fn(&str) -> Result<T, IdError>,
) -> Option<T> {
    match value.map(parse)? {
        Ok(v) => Some(v),
        Err(e) => {
            bad.push((name, e));
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("{0}: {1}")]
    Field(&'static str, IdError),
    #[error("a subject is one of: jmbg; pib; mb; ko + sheet; ko + parcel; ko + jmbg; ko + mb")]
    Combination,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A field as a back-office may send it: absent, good, off by a check
    /// digit, of another kind, or anything at all.
    fn field() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            Just("0512981717776".to_owned()),
            Just("0512981717777".to_owned()),
            Just("101134702".to_owned()),
            Just("07002106".to_owned()),
            Just("803472".to_owned()),
            Just("1520".to_owned()),
            Just("1234/5".to_owned()),
            ".{0,16}",
        ])
    }

    #[test]
    fn every_bad_field_is_named_in_order_and_from_parts_names_the_ko_first() {
        let (parts, bad) =
            Parts::parse(Some("0512981717777"), None, None, Some("80347"), None, None);
        let named: Vec<&str> = bad.iter().map(|(f, _)| *f).collect();
        assert_eq!(named, ["jmbg", "ko"]);
        assert!(parts.jmbg.is_none() && parts.ko.is_none());
        let e = Subject::from_parts(Some("0512981717777"), None, None, Some("80347"), None, None)
            .unwrap_err();
        assert!(matches!(e, SubjectError::Field("ko", _)), "{e}");
        // The good ones make the subject from_parts makes.
        let (parts, bad) = Parts::parse(None, None, None, Some("803472"), Some("1520"), None);
        assert!(bad.is_empty());
        assert_eq!(
            Subject::from_parsed(parts).unwrap(),
            Subject::from_parts(None, None, None, Some("803472"), Some("1520"), None).unwrap()
        );
    }

    proptest! {
        /// A field is named bad exactly when its own parser refuses it, in
        /// the order jmbg, pib, mb, ko, sheet, parcel, and kept exactly
        /// when it parses; `from_parts` agrees with parsing then
        /// `from_parsed`.
        #[test]
        fn each_field_is_parsed_once_and_every_bad_one_named(
            jmbg in field(), pib in field(), mb in field(),
            ko in field(), sheet in field(), parcel in field(),
        ) {
            let given = [
                ("jmbg", jmbg.as_deref().map(|v| Jmbg::parse(v).is_ok())),
                ("pib", pib.as_deref().map(|v| Pib::parse(v).is_ok())),
                ("mb", mb.as_deref().map(|v| Mb::parse(v).is_ok())),
                ("ko", ko.as_deref().map(|v| KoCode::parse(v).is_ok())),
                ("sheet", sheet.as_deref().map(|v| SheetNumber::parse(v).is_ok())),
                ("parcel", parcel.as_deref().map(|v| ParcelNumber::parse(v).is_ok())),
            ];
            let (parts, bad) = Parts::parse(
                jmbg.as_deref(), pib.as_deref(), mb.as_deref(),
                ko.as_deref(), sheet.as_deref(), parcel.as_deref(),
            );
            let named: Vec<&str> = bad.iter().map(|(f, _)| *f).collect();
            let refused: Vec<&str> = given
                .iter()
                .filter(|(_, ok)| *ok == Some(false))
                .map(|(f, _)| *f)
                .collect();
            prop_assert_eq!(named, refused);
            let kept = [
                parts.jmbg.is_some(), parts.pib.is_some(), parts.mb.is_some(),
                parts.ko.is_some(), parts.sheet.is_some(), parts.parcel.is_some(),
            ];
            for ((f, ok), kept) in given.iter().zip(kept) {
                prop_assert_eq!(kept, *ok == Some(true), "{}", f);
            }
            let whole = Subject::from_parts(
                jmbg.as_deref(), pib.as_deref(), mb.as_deref(),
                ko.as_deref(), sheet.as_deref(), parcel.as_deref(),
            );
            match (bad.first(), whole) {
                (None, whole) => prop_assert_eq!(whole.ok(), Subject::from_parsed(parts).ok()),
                (Some((first, _)), Err(SubjectError::Field(f, _))) => {
                    let ko_bad = bad.iter().any(|(f, _)| *f == "ko");
                    prop_assert_eq!(f, if ko_bad { "ko" } else { *first });
                }
                (Some(_), other) => prop_assert!(false, "a bad field, yet {:?}", other),
            }
        }
    }
}
