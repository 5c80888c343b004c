//! Statements a plugin may not send. Connections are pooled and shared by
//! every plugin granted the same database, so a statement that ends or opens
//! a transaction, or changes the connection's session, would outlive the
//! call: later statements of other plugins would run inside a transaction
//! left open (and be lost or committed by someone else), with another
//! `search_path`, or without the server's statement timeout. On the embedded
//! backend `ATTACH` would reach a database the grant does not name, and
//! `VACUUM INTO` writes a file. A transaction is `db.transaction`; a setting
//! for one is `SET LOCAL` inside it.

use crate::bindings::WitError;

/// First keywords refused outright.
const REFUSED: &[&str] = &[
    "ABORT",
    "ATTACH",
    "BEGIN",
    "CALL",
    "COMMIT",
    "COPY",
    "DEALLOCATE",
    "DETACH",
    "DISCARD",
    "DO",
    "END",
    "LISTEN",
    "LOAD",
    "PRAGMA",
    "PREPARE",
    "RELEASE",
    "RESET",
    "ROLLBACK",
    "SAVEPOINT",
    "START",
    "UNLISTEN",
    "VACUUM",
];

/// What may follow `SET`: settings that end with the transaction.
const SET_FOR_THE_TRANSACTION: &[&str] = &["LOCAL", "TRANSACTION", "CONSTRAINTS"];

/// Refuses a statement that controls transactions or changes the session.
pub fn check(sql: &str) -> Result<(), WitError> {
    let mut words = Words { rest: sql };
    let first = words.next().unwrap_or_default();
    let what = if REFUSED.contains(&first.as_str())
        || (first == "SET"
            && !SET_FOR_THE_TRANSACTION.contains(&words.next().unwrap_or_default().as_str()))
    {
        first
    } else if sql
        .as_bytes()
        .windows(SET_CONFIG.len())
        .any(|w| w.eq_ignore_ascii_case(SET_CONFIG))
    {
        // A session-wide setting from inside any statement.
        "set_config".to_string()
    } else {
        return Ok(());
    };
    Err(WitError::invalid(format!(
        "statement \"{what}\" is not allowed: a plugin's statement may not control \
         transactions or change its connection's session (use db.transaction, and SET LOCAL inside it)"
    )))
}

const SET_CONFIG: &[u8] = b"set_config";

/// The statement's leading keywords, upper-cased, past whitespace, comments
/// (`--` to the line's end, `/* */` nested as Postgres nests them) and
/// opening parentheses.
struct Words<'a> {
    rest: &'a str,
}

impl Iterator for Words<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            let s = self
                .rest
                .trim_start_matches(|c: char| c.is_whitespace() || c == '(');
            if let Some(line) = s.strip_prefix("--") {
                self.rest = line.split_once('\n').map_or("", |(_, after)| after);
            } else if s.starts_with("/*") {
                self.rest = past_block_comment(s);
            } else {
                self.rest = s;
                break;
            }
        }
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphabetic() || c == '_'))
            .unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        (!word.is_empty()).then(|| word.to_ascii_uppercase())
    }
}

/// What follows the block comment `s` starts with (nothing, if unclosed).
fn past_block_comment(s: &str) -> &str {
    let mut depth = 0usize;
    let mut i = 0;
    let b = s.as_bytes();
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return &s[i..];
                }
            }
            _ => i += 1,
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_and_session_statements_are_refused() {
        for sql in [
            "BEGIN",
            "begin transaction",
            "  COMMIT;",
            "start transaction isolation level serializable",
            "END",
            "ROLLBACK",
            "abort",
            "SAVEPOINT a",
            "RELEASE SAVEPOINT a",
            "SET statement_timeout = 0",
            "set search_path to evil",
            "SET SESSION AUTHORIZATION bob",
            "RESET ALL",
            "DISCARD ALL",
            "COPY t TO STDOUT",
            "LISTEN x",
            "DO $$ BEGIN EXECUTE 'SET search_path = x'; END $$",
            "CALL p()",
            "PREPARE s AS SELECT 1",
            "ATTACH 'master.sqlite' AS m",
            "PRAGMA foreign_keys = OFF",
            "VACUUM INTO '/tmp/copy'",
            "-- a comment\nBEGIN",
            "/* a /* nested */ comment */ ROLLBACK",
            "(BEGIN",
            "SELECT set_config('search_path', 'x', false)",
            "select SET_CONFIG('a.b', 'c', true)",
        ] {
            let e = check(sql).expect_err(sql);
            assert!(e.message.contains("is not allowed"), "{sql}: {}", e.message);
        }
    }

    #[test]
    fn the_refusal_names_the_keyword() {
        let e = check("  begin; UPDATE t SET a = 1").unwrap_err();
        assert!(
            e.message.starts_with("statement \"BEGIN\""),
            "{}",
            e.message
        );
        let e = check("SELECT set_config('a', 'b', false)").unwrap_err();
        assert!(
            e.message.starts_with("statement \"set_config\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn ordinary_statements_pass() {
        for sql in [
            "SELECT 1",
            "  select * from orders where status = 'BEGIN'",
            "UPDATE kots SET reprint_count = reprint_count + 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "(SELECT 1) UNION (SELECT 2)",
            "INSERT INTO settings (name) VALUES ('commit')",
            "DELETE FROM t WHERE id = $1",
            "SET LOCAL statement_timeout = '5s'",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "CREATE TABLE IF NOT EXISTS t (a int)",
            "DELETE_ME",
            "/* unclosed",
            "",
        ] {
            assert!(check(sql).is_ok(), "{sql}");
        }
    }
}
