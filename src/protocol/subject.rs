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

    /// Builds a subject from optional parts as a CLI or API gives them.
    pub fn from_parts(
        jmbg: Option<&str>,
        pib: Option<&str>,
        mb: Option<&str>,
        ko: Option<&str>,
        sheet: Option<&str>,
        parcel: Option<&str>,
    ) -> Result<Subject, SubjectError> {
        let ko = ko
            .map(KoCode::parse)
            .transpose()
            .map_err(|e| SubjectError::Field("ko", e))?;
        let jmbg = jmbg
            .map(Jmbg::parse)
            .transpose()
            .map_err(|e| SubjectError::Field("jmbg", e))?;
        let pib = pib
            .map(Pib::parse)
            .transpose()
            .map_err(|e| SubjectError::Field("pib", e))?;
        let mb = mb
            .map(Mb::parse)
            .transpose()
            .map_err(|e| SubjectError::Field("mb", e))?;
        let sheet = sheet
            .map(SheetNumber::parse)
            .transpose()
            .map_err(|e| SubjectError::Field("sheet", e))?;
        let parcel = parcel
            .map(ParcelNumber::parse)
            .transpose()
            .map_err(|e| SubjectError::Field("parcel", e))?;
        Ok(match (ko, jmbg, pib, mb, sheet, parcel) {
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("{0}: {1}")]
    Field(&'static str, IdError),
    #[error("a subject is one of: jmbg; pib; mb; ko + sheet; ko + parcel; ko + jmbg; ko + mb")]
    Combination,
}
