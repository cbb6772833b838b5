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
