//! X-Road message protocol 4.0, as a client information system speaks it
//! (NIIS's published specification, `tests/vectors/x-road/`): requests
//! with the X-Road headers and a Document/Literal-Wrapped body, answers
//! read as a client's security server would check them, and more (every
//! header copied back, `requestHash`, the `…Response` wrapper), SOAP with
//! attachments and MTOM, the charsets a security server may send, its
//! faults in both forms, and the metaservices `listMethods` and
//! `allowedMethods`.

/// One attachment of an answer (SOAP with attachments or MTOM), as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its `Content-ID`, without the angle brackets.
    pub content_id: String,
    /// Its `Content-Type`, as sent (`application/octet-stream` when none).
    pub content_type: String,
    /// Its file name, from `Content-Disposition` or the type's `name`.
    pub name: Option<String>,
    /// Its bytes, the transfer encoding undone.
    pub bytes: Vec<u8>,
}
