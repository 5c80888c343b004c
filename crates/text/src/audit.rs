//! Words of the audit contract both sides must agree on.

/// The message of `audit.record-transaction`'s `unavailable` error when the
/// transaction committed and only its record could not be written: the
/// change is made, so a caller must not let it be repeated.
pub const COMMITTED_UNRECORDED: &str = "the transaction committed but the audit log is unavailable";
