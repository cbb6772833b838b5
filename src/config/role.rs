//! The roles a client of the API is given in the configuration, and the
//! kinds of work each may do.

/// What a token may do. A back-office files requests and reads its own;
/// the administrators' roles split what operators need: `viewer` reads the
/// queues, registries and requests; `operator` also retries, cancels,
/// pauses, resumes and exports; `auditor` also verifies the audit trail and
/// answers "who used this person's data". `admin` may do all of it (the
/// role of the tokens configured before roles existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Backoffice,
    Viewer,
    Operator,
    Auditor,
    Admin,
}

/// One kind of administrator's work, which [`Role`]s may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Read the queues, registries, requests, statistics.
    Read,
    /// Retry, cancel, pause, resume, export the store.
    Act,
    /// Verify the audit trail, who used a person's data.
    Audit,
}

impl Role {
    pub const NAMES: [&'static str; 5] = ["backoffice", "viewer", "operator", "auditor", "admin"];

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "backoffice" => Role::Backoffice,
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "auditor" => Role::Auditor,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn may(self, d: Duty) -> bool {
        matches!(
            (self, d),
            (Role::Admin, _)
                | (Role::Viewer | Role::Operator | Role::Auditor, Duty::Read)
                | (Role::Operator, Duty::Act)
                | (Role::Auditor, Duty::Audit)
        )
    }
}
