//! Building check outcomes: a detail for everyone, a hint for the operator
//! whenever there is something to do.

use neo_ops_sdk::{CheckOutcome, CheckStatus, Error};

pub fn pass(detail: impl Into<String>) -> CheckOutcome {
    outcome(CheckStatus::Pass, detail.into(), None)
}

pub fn warn(detail: impl Into<String>, hint: impl Into<String>) -> CheckOutcome {
    outcome(CheckStatus::Warn, detail.into(), Some(hint.into()))
}

pub fn fail(detail: impl Into<String>, hint: impl Into<String>) -> CheckOutcome {
    outcome(CheckStatus::Fail, detail.into(), Some(hint.into()))
}

pub fn skip(detail: impl Into<String>, hint: impl Into<String>) -> CheckOutcome {
    outcome(CheckStatus::Skip, detail.into(), Some(hint.into()))
}

fn outcome(status: CheckStatus, detail: String, hint: Option<String>) -> CheckOutcome {
    CheckOutcome {
        status,
        detail,
        hint,
    }
}

/// A host error as `code: message`, e.g. `unavailable: tenant "acme" database unavailable`.
pub fn describe(e: &Error) -> String {
    format!("{}: {}", e.code.as_str(), e.message)
}
