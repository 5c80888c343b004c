//! Statements a plugin may not send. Connections are pooled and shared by
//! every plugin granted the same database, so a statement that ends or opens
//! a transaction, or changes the connection's session, would outlive the
//! call: later statements of other plugins would run inside a transaction
//! left open (and be lost or committed by someone else), with another
//! `search_path`, a temporary table shadowing a real one, a lock held for
//! good, or without the server's statement timeout. On the embedded backend
//! `ATTACH` would reach a database the grant does not name, and `VACUUM
//! INTO` writes a file. A transaction is `db.transaction`; a setting for one
//! is `SET LOCAL` inside it.
//!
//! The SQL is read as each database would split it, Postgres and SQLite
//! (they differ: nested comments, dollar quotes and `E''` escapes are
//! Postgres's, `[]` and backtick identifiers SQLite's), and refused if
//! either reading finds a refused statement: every statement in it (SQLite
//! runs them all), past comments, literals and quoted identifiers.

use crate::bindings::WitError;

/// First keywords refused outright.
const REFUSED_FIRST: &[&str] = &[
    "ABORT",
    "ALTER",
    "ATTACH",
    "BEGIN",
    "CALL",
    "COMMIT",
    "COPY",
    "DEALLOCATE",
    "DECLARE",
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

/// Settings the host holds on every connection, not even `SET LOCAL`: with
/// them off, a statement the host gave up on runs on in the server, its
/// locks held and its backend never given back.
const HOST_SETTINGS: &[&str] = &[
    "STATEMENT_TIMEOUT",
    "IDLE_IN_TRANSACTION_SESSION_TIMEOUT",
    "CLIENT_CONNECTION_CHECK_INTERVAL",
];

/// Words refused anywhere in a statement: temporary objects (they live as
/// long as the connection), and what changes settings for the session.
const REFUSED_ANYWHERE: &[&str] = &["TEMP", "TEMPORARY", "SET_CONFIG", "PG_SETTINGS"];

/// Word beginnings refused anywhere: the temporary schema (`pg_temp.t` is a
/// temporary table without the word), and advisory locks, which can outlive
/// the call or stall the host's own (the audit chain's).
const REFUSED_PREFIXES: &[&str] = &["PG_TEMP", "PG_ADVISORY", "PG_TRY_ADVISORY"];

/// What `CREATE [OR REPLACE]` may not make: code that could run any of the
/// above when called.
const REFUSED_CREATED: &[&str] = &["FUNCTION", "PROCEDURE"];

/// Tables only the host touches: a row of `api_tokens` is a credential (a
/// plugin that could write one could mint a super_admin token).
const HOST_ONLY_TABLES: &[&str] = &["API_TOKENS"];

/// Tables plugins may read but not write: the audit chain, appended to by
/// the host (`audit.record`, which stamps who), so a plugin cannot forge
/// or rewrite a record.
const READ_ONLY_TABLES: &[&str] = &["AUDIT_LOG", "AUDIT_LOG_ID_SEQ"];

/// Words that make a statement write (or define something that writes),
/// or lock a table against writers (`LOCK TABLE audit_log` would stall
/// every append).
const WRITING: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "DROP", "CREATE", "REPLACE", "ALTER",
    "GRANT", "REVOKE", "RENAME", "UPSERT", "LOCK",
];

/// Word beginnings of Postgres functions that end or signal other
/// connections' work: the host's, and other plugins' and tenants' (one role
/// usually serves every database).
const REACHES_OTHER_CONNECTIONS: &[&str] = &[
    "PG_TERMINATE_BACKEND",
    "PG_CANCEL_BACKEND",
    "PG_RELOAD_CONF",
    "PG_SIGNAL",
];

/// Word beginnings of Postgres functions that run SQL given as text,
/// which no reading of the words could see into.
const RUNS_TEXT_AS_SQL: &[&str] = &[
    "QUERY_TO_XML",
    "TABLE_TO_XML",
    "CURSOR_TO_XML",
    "SCHEMA_TO_XML",
    "DATABASE_TO_XML",
];

/// SQL found allowed before: plugins send the same few statements on every
/// call, and looking one up costs a fraction of reading it twice (about 4 %
/// of a `/status.json` request).
static ALLOWED: std::sync::LazyLock<std::sync::RwLock<std::collections::HashSet<Box<str>>>> =
    std::sync::LazyLock::new(Default::default);

/// How many allowed statements are remembered, and the longest remembered.
const ALLOWED_KEPT: usize = 1024;
const ALLOWED_LONGEST: usize = 4096;

/// Refuses SQL holding a statement that controls transactions or changes
/// the session, naming the word that did.
pub fn check(sql: &str) -> Result<(), WitError> {
    let allowed = || ALLOWED.read().unwrap_or_else(|p| p.into_inner());
    if sql.len() <= ALLOWED_LONGEST && allowed().contains(sql) {
        return Ok(());
    }
    read(sql)?;
    if sql.len() <= ALLOWED_LONGEST {
        let mut allowed = ALLOWED.write().unwrap_or_else(|p| p.into_inner());
        // Full (SQL built from values, say): start again, so statements of
        // plugins loaded later are remembered too.
        if allowed.len() >= ALLOWED_KEPT {
            allowed.clear();
        }
        allowed.insert(sql.into());
    }
    Ok(())
}

/// [`check`] without the memory of what was allowed.
fn read(sql: &str) -> Result<(), WitError> {
    // SQLite stops reading at a NUL as if the text ended there, and sqlx's
    // thread then steps past it by nothing, for good: one statement would
    // pin a core until a restart. Postgres refuses it anyway.
    if sql.contains('\0') {
        return Err(WitError::invalid("SQL must not contain a NUL byte"));
    }
    for dialect in [Dialect::Postgres, Dialect::Sqlite] {
        for statement in statements(sql, dialect) {
            if let Some(word) = refused(&statement) {
                let why = if word.starts_with("SET LOCAL") {
                    "the host holds this limit on every connection"
                } else {
                    "a plugin's statement may not control transactions or change its \
                     connection's session (use db.transaction, and SET LOCAL inside it)"
                };
                return Err(WitError::invalid(format!(
                    "statement \"{word}\" is not allowed: {why}"
                )));
            }
            if let Some(why) = reaches_host_tables(&statement) {
                return Err(WitError::denied(why));
            }
        }
    }
    Ok(())
}

/// Why one statement's words reach what is the host's: a host-only table
/// named at all, a read-only one named by a statement that writes, or a
/// function that runs text as SQL.
fn reaches_host_tables(words: &[Word]) -> Option<String> {
    let named = |list: &[&str]| {
        words
            .iter()
            .find(|w| list.iter().any(|t| w.text.eq_ignore_ascii_case(t)))
    };
    if let Some(table) = named(HOST_ONLY_TABLES) {
        return Some(format!(
            "table \"{}\" is the host's: a plugin's statement may not name it",
            table.text
        ));
    }
    if let (Some(table), Some(write)) = (named(READ_ONLY_TABLES), named(WRITING)) {
        return Some(format!(
            "\"{}\" on table \"{}\" is not allowed: plugins only read it (audit records are \
             written by the host, through audit.record)",
            write.text.to_ascii_uppercase(),
            table.text
        ));
    }
    words.iter().find_map(|w| {
        let text = w.text.to_ascii_uppercase();
        let calls = |list: &[&str]| list.iter().any(|f| text.starts_with(f));
        if calls(RUNS_TEXT_AS_SQL) {
            Some(format!("\"{}\" is not allowed: it runs SQL given as text", w.text))
        } else if calls(REACHES_OTHER_CONNECTIONS) {
            Some(format!(
                "\"{}\" is not allowed: it reaches other connections (the host's and other plugins')",
                w.text
            ))
        } else {
            None
        }
    })
}

/// Whose rules split the SQL into statements and words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Sqlite,
}

/// The word that makes one statement's words refused, if any.
fn refused(words: &[Word]) -> Option<String> {
    let is = |i: usize, list: &[&str]| {
        words
            .get(i)
            .is_some_and(|w| list.iter().any(|k| w.text.eq_ignore_ascii_case(k)))
    };
    let first = words.first()?;
    if is(0, REFUSED_FIRST) || (is(0, &["SET"]) && !is(1, SET_FOR_THE_TRANSACTION)) {
        return Some(first.text.to_ascii_uppercase());
    }
    if is(0, &["SET"]) && is(1, &["LOCAL"]) && is(2, HOST_SETTINGS) {
        return Some(format!("SET LOCAL {}", words[2].text));
    }
    if is(0, &["CREATE"]) {
        let made = if is(1, &["OR"]) && is(2, &["REPLACE"]) {
            3
        } else {
            1
        };
        if is(made, REFUSED_CREATED) {
            return Some(format!("CREATE {}", words[made].text.to_ascii_uppercase()));
        }
    }
    words.iter().find_map(|w| {
        let starts = |prefix: &str| {
            w.text
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        if w.escaped {
            Some("U&".to_string())
        } else if REFUSED_ANYWHERE
            .iter()
            .any(|k| w.text.eq_ignore_ascii_case(k))
            || REFUSED_PREFIXES.iter().any(|p| starts(p))
        {
            Some(w.text.to_string())
        } else {
            None
        }
    })
}

/// A word of a statement: a keyword or identifier, bare or quoted.
#[derive(Debug)]
struct Word<'a> {
    text: std::borrow::Cow<'a, str>,
    /// `U&"…"` or `U&'…'`: Unicode escapes that could spell any word.
    escaped: bool,
}

/// A byte of a bare word: both databases take letters, digits, `_`, `$`
/// and any non-ASCII character.
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The statements of `sql` as `dialect` reads it, each as its words, split
/// at every `;` outside literals, quoted identifiers and comments (empty
/// statements dropped).
fn statements(sql: &str, dialect: Dialect) -> Vec<Vec<Word<'_>>> {
    let pg = dialect == Dialect::Postgres;
    let b = sql.as_bytes();
    let mut out: Vec<Vec<Word>> = vec![Vec::new()];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let words = out.last_mut().expect("one statement at least");
        if c == b';' {
            out.push(Vec::new());
            i += 1;
        } else if b[i..].starts_with(b"--") {
            // Postgres ends a line comment at a carriage return too.
            i = b[i..]
                .iter()
                .position(|&c| c == b'\n' || (pg && c == b'\r'))
                .map_or(b.len(), |n| i + n + 1);
        } else if b[i..].starts_with(b"/*") {
            i = past_block_comment(b, i, pg);
        } else if pg && (c == b'U' || c == b'u') && b.get(i + 1) == Some(&b'&') {
            words.push(Word {
                text: "".into(),
                escaped: true,
            });
            i = match b.get(i + 2) {
                Some(&q @ (b'\'' | b'"')) => past_quoted(b, i + 2, q, false).0,
                _ => i + 2,
            };
        } else if pg && (c == b'E' || c == b'e') && b.get(i + 1) == Some(&b'\'') {
            // An escape string: a backslash escapes the next character.
            i = past_quoted(b, i + 1, b'\'', true).0;
        } else if c == b'\'' {
            i = past_quoted(b, i, b'\'', false).0;
        } else if c == b'"' || (!pg && c == b'`') {
            let (end, closed) = past_quoted(b, i, c, false);
            // Up to the closing quote, or to the end when there is none
            // (every bound is an ASCII byte's, so a character's boundary).
            let inner = &sql[i + 1..if closed { end - 1 } else { end }];
            let doubled = if c == b'"' { "\"\"" } else { "``" };
            words.push(Word {
                text: undoubled(inner, doubled),
                escaped: false,
            });
            i = end;
        } else if !pg && c == b'[' {
            let close = b[i..].iter().position(|&c| c == b']').map(|n| i + n);
            words.push(Word {
                text: sql[i + 1..close.unwrap_or(b.len())].into(),
                escaped: false,
            });
            i = close.map_or(b.len(), |close| close + 1);
        } else if !pg && matches!(c, b'$' | b'@' | b':' | b'#') {
            i = past_sqlite_variable(b, i);
        } else if pg
            && c == b'$'
            && let Some(end) = past_dollar_quote(sql, i)
        {
            i = end;
        } else if is_word_byte(c) && !c.is_ascii_digit() && c != b'$' {
            let end = (i..b.len())
                .find(|&j| !is_word_byte(b[j]))
                .unwrap_or(b.len());
            words.push(Word {
                text: sql[i..end].into(),
                escaped: false,
            });
            i = end;
        } else {
            i += 1;
        }
    }
    out.retain(|words| !words.is_empty());
    out
}

/// A quoted identifier's text, a doubled quote inside it made single.
fn undoubled<'a>(text: &'a str, doubled: &str) -> std::borrow::Cow<'a, str> {
    if text.contains(doubled) {
        text.replace(doubled, &doubled[..1]).into()
    } else {
        text.into()
    }
}

/// Past a literal or quoted identifier opened by `quote` at `start` (a
/// doubled quote inside is the quote itself; with `backslash`, a backslash
/// escapes the next byte), and whether it closed; the end of the text if
/// it never does.
fn past_quoted(b: &[u8], start: usize, quote: u8, backslash: bool) -> (usize, bool) {
    let mut i = start + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return (i + 1, true);
        }
        i += 1;
    }
    (b.len(), false)
}

/// Past an SQLite parameter (`$name`, `@name`, `:name`, `#name`), as its
/// tokenizer reads one: after the name, `(` starts a Tcl-style suffix that
/// swallows everything, quotes included, up to `)` or whitespace.
fn past_sqlite_variable(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    let mut named = false;
    while i < b.len() {
        if is_word_byte(b[i]) {
            named = true;
            i += 1;
        } else if b[i] == b'(' && named {
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b')' {
                i += 1;
            }
            return (i + 1).min(b.len());
        } else if b[i] == b':' && b.get(i + 1) == Some(&b':') {
            i += 2;
        } else {
            break;
        }
    }
    i
}

/// Past the block comment opening at `start`: nested as Postgres nests
/// them, or ending at the first `*/` as SQLite's do.
fn past_block_comment(b: &[u8], start: usize, nested: bool) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') if nested || depth == 0 => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

/// Past a Postgres dollar-quoted string (`$$…$$`, `$tag$…$tag$`) opening
/// at `start`; `None` when `$` opens none (`$1`, a parameter).
fn past_dollar_quote(sql: &str, start: usize) -> Option<usize> {
    let rest = &sql.as_bytes()[start + 1..];
    let tag_len = rest.iter().position(|&c| c == b'$')?;
    let tag = &rest[..tag_len];
    let valid = tag
        .iter()
        .enumerate()
        .all(|(n, &c)| is_word_byte(c) && c != b'$' && !(n == 0 && c.is_ascii_digit()));
    if !valid {
        return None;
    }
    let delimiter = &sql[start..start + tag_len + 2];
    let body = start + delimiter.len();
    Some(
        sql[body..]
            .find(delimiter)
            .map_or(sql.len(), |n| body + n + delimiter.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(sql: &str) -> String {
        let e = check(sql).expect_err(sql);
        assert!(e.message.contains("is not allowed"), "{sql}: {}", e.message);
        e.message
    }

    #[test]
    fn a_nul_byte_is_refused() {
        for sql in ["SELECT 1\0", "\0", "SELECT 1; \0 DROP TABLE x"] {
            let e = check(sql).expect_err(sql);
            assert_eq!(e.message, "SQL must not contain a NUL byte");
        }
    }

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
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "ALTER ROLE neo SET search_path = x",
            "ATTACH 'master.sqlite' AS m",
            "PRAGMA foreign_keys = OFF",
            "VACUUM INTO '/tmp/copy'",
            "-- a comment\nBEGIN",
            "/* a /* nested */ comment */ ROLLBACK",
            "(BEGIN",
            ";BEGIN",
            "SELECT 1; BEGIN",
            "SELECT 'a;b'; ATTACH 'x' AS m",
            "SELECT set_config('search_path', 'x', false)",
            "select SET_CONFIG('a.b', 'c', true)",
            "SELECT \"set_config\"('a', 'b', false)",
            "CREATE TEMP TABLE api_tokens AS SELECT 1",
            "create temporary table t (a int)",
            "SELECT 1 INTO TEMP t",
            "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_try_advisory_lock(1)",
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
            "create or replace procedure p() language sql as $$ select 1 $$",
            "SELECT U&\"s\\0065t_config\"('a', 'b', false)",
            // Read as SQLite reads it: comments do not nest, [] and ``
            // quote identifiers, $ opens no string.
            "/* /* */ ATTACH 'master.sqlite' AS m",
            "SELECT 1 AS ['];ATTACH 'x' AS m; SELECT 1 AS [']",
            "SELECT 1 AS `';`; BEGIN",
            "SELECT $a$; ATTACH 'x' AS m; -- $a$",
            // Read as Postgres reads it: E'' escapes, non-ASCII words.
            "SELECT E'\\'', set_config('search_path', 'x', false)",
            "SELECT 1 AS \u{e9}$$, set_config('search_path', 'x', false) AS \u{e9}$$",
            "CREATE TABLE pg_temp.api_tokens (id int)",
            "SELECT 1 INTO pg_temp_3.t",
            "SELECT pg_advisory_xact_lock(7305425512)",
            // The limits the host holds on every connection.
            "SET LOCAL statement_timeout = 0",
            "set local \"idle_in_transaction_session_timeout\" to 0",
            "SET LOCAL client_connection_check_interval = 0",
            // SQLite's Tcl-style parameter swallows the quote.
            "SELECT $1('); ATTACH 'x' AS m; SELECT $1(')",
            "SELECT @a('); BEGIN; SELECT @a(')",
            // Postgres ends a line comment at a carriage return.
            "--\rSET search_path = evil",
        ] {
            refusal(sql);
        }
    }

    #[test]
    fn the_refusal_names_the_word() {
        assert!(refusal("  begin; UPDATE t SET a = 1").starts_with("statement \"BEGIN\""));
        assert!(
            refusal("SELECT set_config('a', 'b', false)").starts_with("statement \"set_config\"")
        );
        assert!(refusal("SELECT 1; PRAGMA x").starts_with("statement \"PRAGMA\""));
        assert_eq!(
            refusal("SET LOCAL statement_timeout = 0"),
            "statement \"SET LOCAL statement_timeout\" is not allowed: the host holds this \
             limit on every connection"
        );
        assert!(
            refusal("CREATE OR REPLACE FUNCTION f()").starts_with("statement \"CREATE FUNCTION\"")
        );
    }

    /// The host's own tables: tokens are not named at all, the audit chain
    /// is only read; however the name is written or hidden.
    #[test]
    fn the_hosts_tables_are_out_of_reach() {
        for sql in [
            "INSERT INTO api_tokens (token_id, name, role, token_hash) VALUES ('a', 'b', 'super_admin', 'c')",
            "UPDATE API_TOKENS SET revoked_at = NULL",
            "SELECT token_hash FROM public.api_tokens",
            "SELECT * FROM \"api_tokens\"",
            "select * from [api_tokens]",
            "INSERT INTO audit_log (actor) VALUES ('oncall')",
            "update public.\"audit_log\" set actor = 'x'",
            "DELETE FROM audit_log WHERE id > 10",
            "WITH gone AS (DELETE FROM audit_log RETURNING id) SELECT COUNT(*) FROM gone",
            "REPLACE INTO audit_log (id) VALUES (1)",
            "CREATE TRIGGER t AFTER INSERT ON orders BEGIN INSERT INTO audit_log (actor) VALUES ('x'); END",
            "DROP TABLE audit_log",
            "LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE",
            "DROP SEQUENCE audit_log_id_seq CASCADE",
            "SELECT query_to_xml('select token_hash from api' || '_tokens', true, false, '')",
            "SELECT table_to_xml_and_xmlschema('x', true, false, '')",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
            "select PG_CANCEL_BACKEND(1)",
            "SELECT pg_reload_conf()",
        ] {
            let e = check(sql).expect_err(sql);
            assert_eq!(e.code, crate::bindings::ErrorCode::Denied, "{sql}");
        }
        assert_eq!(
            check("UPDATE api_tokens SET revoked_at = NULL")
                .unwrap_err()
                .message,
            "table \"api_tokens\" is the host's: a plugin's statement may not name it"
        );
        assert_eq!(
            check("DELETE FROM audit_log").unwrap_err().message,
            "\"DELETE\" on table \"audit_log\" is not allowed: plugins only read it (audit \
             records are written by the host, through audit.record)"
        );
        for sql in [
            "SELECT at, actor, action, target FROM audit_log WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
            "SELECT COUNT(*) FROM audit_log",
            "SELECT 'api_tokens' AS word",
            "UPDATE orders SET note = 'audit_log'",
        ] {
            assert!(check(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn ordinary_statements_pass() {
        for sql in [
            "SELECT 1",
            "  select * from orders where status = 'BEGIN'",
            "SELECT 'a; BEGIN' AS s",
            "SELECT $$ a dollar-quoted string $$ AS s",
            "SELECT E'it\\'s' AS s, 'a' AS t",
            "SELECT \"begin\" FROM t",
            "-- BEGIN\nSELECT 1",
            "/* SET x */ SELECT 1",
            "UPDATE kots SET reprint_count = reprint_count + 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "(SELECT 1) UNION (SELECT 2)",
            "INSERT INTO settings (name) VALUES ('commit')",
            "DELETE FROM t WHERE id = $1",
            "SELECT $1, $2",
            "SET LOCAL lock_timeout = '5s'",
            "SET LOCAL work_mem = '64MB'",
            "SELECT pid FROM pg_stat_activity",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "CREATE TABLE IF NOT EXISTS t (a int)",
            "CREATE UNIQUE INDEX i ON t (a)",
            "SELECT [order] FROM t",
            "SELECT caf\u{e9} FROM t WHERE n = $1",
            "SELECT temperature, template FROM t",
            "DELETE_ME",
            "SELECT 1;",
            ";;",
            "/* unclosed",
            "'unclosed",
            // Unclosed quotes ending in a multi-byte character: no panic.
            "SELECT \"\u{e9}",
            "SELECT `\u{e9}",
            "SELECT [\u{e9}",
            "SELECT :name, @other, $third FROM t",
            "",
        ] {
            assert!(check(sql).is_ok(), "{sql}");
        }
    }
}
