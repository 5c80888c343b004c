//! Bearer tokens: printed once at creation, stored as SHA-256 only, looked up
//! by their public id and compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::backends::db::{DbError, Pool, Value};
use crate::manifest::Role;

#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Creates a token and returns it; only its hash is stored.
pub async fn create_token(master: &Pool, role: Role, name: &str) -> Result<String, DbError> {
    let mut bytes = [0u8; 36];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token_id = hex::encode(&bytes[..4]);
    let token = format!("neo_{token_id}_{}", hex::encode(&bytes[4..]));
    master
        .execute(
            "INSERT INTO api_tokens (token_id, name, role, token_hash) VALUES ($1, $2, $3, $4)",
            &[
                Value::Text(token_id),
                Value::Text(name.into()),
                Value::Text(role.as_str().into()),
                Value::Text(sha256_hex(&token)),
            ],
        )
        .await?;
    Ok(token)
}

/// Revokes a token by its public id (the 8 hex digits after `neo_`).
pub async fn revoke_token(master: &Pool, token_id: &str) -> Result<bool, DbError> {
    let n = master
        .execute(
            "UPDATE api_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL",
            &[
                Value::Timestamp(chrono::Utc::now().timestamp_micros()),
                Value::Text(token_id.into()),
            ],
        )
        .await?;
    Ok(n > 0)
}

/// The principal a presented token stands for, if it is live.
pub async fn authenticate(master: &Pool, token: &str) -> Result<Option<Principal>, DbError> {
    let Some(token_id) = token
        .strip_prefix("neo_")
        .and_then(|t| t.split_once('_'))
        .map(|(id, _)| id)
        .filter(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Ok(None);
    };
    let rows = master
        .query(
            "SELECT name, role, token_hash FROM api_tokens WHERE token_id = $1 AND revoked_at IS NULL",
            &[Value::Text(token_id.into())],
        )
        .await?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let (Value::Text(name), Value::Text(role), Value::Text(stored)) = (&row[0], &row[1], &row[2])
    else {
        return Ok(None);
    };
    let presented = sha256_hex(token);
    if !bool::from(presented.as_bytes().ct_eq(stored.as_bytes())) {
        return Ok(None);
    }
    Ok(Role::parse(role).map(|role| Principal {
        name: name.clone(),
        role,
    }))
}
