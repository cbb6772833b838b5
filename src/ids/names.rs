//! The gateway's own names for what it handles: a request's id, the case
//! it serves, the registry and service it asks, the back-office client
//! that filed it. Each is a string on disk and on the wire (serde
//! transparent, so records and API bodies are as they were) but a type of
//! its own in code, so that a case number cannot be passed where a
//! registry is meant.
//!
//! They read as `&str` (`Deref`, `Borrow<str>`, comparisons with `str`),
//! so code that only reads them needs no change. A [`RequestId`] is made
//! by the gateway (a ULID) or parsed as one; the others are checked where
//! they come in (the API's field rules, the configuration) and taken as
//! they are here.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::IdError;

macro_rules! name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        // As a `String` prints, so that a record's `Debug` is as it was.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

macro_rules! taken_as_is {
    ($name:ident) => {
        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(s.to_owned())
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> $name {
                $name(s.clone())
            }
        }
    };
}

name!(
    /// A request's id: a ULID the gateway made when the request was filed,
    /// its time the filing time (so ids sort in filing order, and the
    /// stores seek by time in them).
    RequestId
);
name!(
    /// The administrative case (predmet) a request serves, as the
    /// back-office numbers it.
    CaseNumber
);
name!(
    /// A registry the gateway exchanges with (`civil`, `cadastre`, ...),
    /// as the configuration names it.
    RegistryId
);
name!(
    /// A service of the catalogue (`civil.birth-extract`, ...).
    ServiceId
);
name!(
    /// A back-office client, as its certificate or token names it.
    ClientId
);
taken_as_is!(CaseNumber);
taken_as_is!(RegistryId);
taken_as_is!(ServiceId);
taken_as_is!(ClientId);

impl RequestId {
    /// A new id timed `now_ms`.
    pub fn at(now_ms: u64) -> RequestId {
        RequestId(ulid::Ulid::from_parts(now_ms, rand::random()).to_string())
    }

    /// A new id timed by the system clock.
    pub fn new() -> RequestId {
        RequestId(ulid::Ulid::new().to_string())
    }

    /// An id as the gateway writes them: 26 characters of Crockford's
    /// base 32, upper case.
    pub fn parse(s: &str) -> Result<RequestId, IdError> {
        match ulid::Ulid::from_string(s) {
            Ok(u) if u.to_string() == s => Ok(RequestId(s.to_owned())),
            _ => Err(IdError::Format(format!(
                "a request id is a ULID (26 characters of 0-9 and A-Z without I, L, O, U), found {s:?}"
            ))),
        }
    }

    /// An id taken as it is, unchecked: for tests and benchmarks that name
    /// their requests (`"A"`, `"01TEST…"`), as a store would read them.
    #[cfg(any(test, feature = "bench"))]
    pub fn named(s: &str) -> RequestId {
        RequestId(s.to_owned())
    }

    /// The filing time the id carries, in milliseconds.
    pub fn time_ms(&self) -> Option<u64> {
        ulid::Ulid::from_string(&self.0)
            .ok()
            .map(|u| u.timestamp_ms())
    }
}

impl FromStr for RequestId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<RequestId, IdError> {
        RequestId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_serialise_as_the_strings_they_hold() {
        let case = CaseNumber::from("351-12/2026-IV");
        assert_eq!(serde_json::to_string(&case).unwrap(), r#""351-12/2026-IV""#);
        let back: CaseNumber = serde_json::from_str(r#""351-12/2026-IV""#).unwrap();
        assert_eq!(back, case);
        assert_eq!(format!("{case:?}"), format!("{:?}", "351-12/2026-IV"));
        assert_eq!(case.to_string(), "351-12/2026-IV");
        assert_eq!(case, "351-12/2026-IV");
        assert!(case.starts_with("351"));
        let registry = RegistryId::from("civil");
        let mut seen = std::collections::HashSet::new();
        seen.insert(registry.clone());
        assert!(seen.contains("civil"));
    }

    #[test]
    fn a_request_id_is_a_ulid_as_the_gateway_writes_it() {
        let id = RequestId::at(1_700_000_000_000);
        assert_eq!(id.len(), 26);
        assert_eq!(id.time_ms(), Some(1_700_000_000_000));
        assert_eq!(RequestId::parse(&id).unwrap(), id);
        assert!(RequestId::new() > id, "later ids sort later");
        for bad in [
            "",
            "01JTEST",
            "01j9z3q4v8k2m6n0p1r3s5t7v9",
            "81J9Z3Q4V8K2M6N0P1R3S5T7V9",
        ] {
            let e = RequestId::parse(bad).unwrap_err().to_string();
            assert!(e.contains("a request id is a ULID"), "{bad}: {e}");
        }
        // What the store kept is read as it is, even from before the rule.
        let old: RequestId = serde_json::from_str(r#""01X""#).unwrap();
        assert_eq!(serde_json::to_string(&old).unwrap(), r#""01X""#);
    }
}
