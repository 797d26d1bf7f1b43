//! Per-user API tokens: how tools that cannot present a client certificate (TAXII feed
//! readers such as MISP's and OpenCTI's, SIEM connectors) authenticate to the node, as one
//! user of this organisation with one [`UserRole`].
//!
//! A token is `bwt_<id>_<secret>`: the id is 8 random bytes in hex (public: listed, used to
//! revoke, named in audit records and errors), the secret 32 random bytes in hex. Only the
//! SHA-256 of the secret (of its 64 hex characters) is stored, so the whole token is shown
//! exactly once, by [`create`]. Tokens expire (1 hour to 400 days after creation) and can be
//! revoked; a revoked token stays listed, marked, so it is reported as revoked, not unknown.
//!
//! Owns: the token format ([`parse`]), checking a presented secret against a record
//! ([`check`], constant-time), the service over the store ([`create`], [`list`], [`revoke`])
//! and [`authenticate`], which the TAXII server calls with what a tool presented.
//!
//! It must never: store, log, audit or put in an error message a token's secret (or a whole
//! token); compare secrets in variable time; know anything of HTTP, gRPC or protobuf (the
//! callers turn requests into these calls and [`TokenError`] into their status codes).

use aws_lc_rs::{constant_time, digest};

use crate::audit::AuditEvent;
use crate::pki::{UserRole, check_user_name};
use crate::store::{ApiTokenRecord, Store, StoreError};

/// Every token starts with this.
pub const PREFIX: &str = "bwt_";
/// Random bytes in a token id (hex: twice as many characters).
pub const ID_BYTES: usize = 8;
/// Random bytes in a token secret (hex: twice as many characters).
pub const SECRET_BYTES: usize = 32;

const MINUTE_MS: i64 = 60 * 1000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Shortest lifetime a token may be created with.
pub const MIN_TTL_MS: i64 = HOUR_MS;
/// Longest lifetime a token may be created with.
pub const MAX_TTL_MS: i64 = 400 * DAY_MS;
/// Lifetime when none is given.
pub const DEFAULT_TTL_MS: i64 = 90 * DAY_MS;
/// Longest label (bytes).
pub const MAX_LABEL_LEN: usize = 128;

/// Why a token was refused or could not be created, listed or revoked. No message ever holds
/// a secret or a whole token; ids are public and may appear.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the API token is malformed ({0}); present the whole token exactly as \
         `bluewire token create` printed it: bwt_<16 hex characters>_<64 hex characters>"
    )]
    Malformed(&'static str),
    #[error(
        "the token id is not valid: give the 16 hex characters `bluewire token list` shows in \
         its ID column (not the token itself)"
    )]
    InvalidId,
    #[error(
        "there is no API token with id {0} on this node; `bluewire token list` shows its \
         tokens, and an operator can make one with `bluewire token create`"
    )]
    Unknown(String),
    #[error(
        "the secret of API token {0} does not match; present the whole token exactly as it was \
         printed when it was created, or ask an operator to create a new one"
    )]
    WrongSecret(String),
    #[error(
        "API token {id} expired at {at}; ask an operator to create a new one \
         (`bluewire token create`) and configure the tool with it"
    )]
    Expired { id: String, at: String },
    #[error(
        "API token {id} was revoked at {at}; ask an operator for a new one \
         (`bluewire token create`) if the tool should still have access"
    )]
    Revoked { id: String, at: String },
    #[error("cannot create the API token: {0}")]
    Invalid(String),
    #[error(
        "stored API token {id} is unreadable: {detail}; the database is damaged: revoke the \
         token, create a new one, and restore data_dir from a backup if more is damaged"
    )]
    Corrupt { id: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token as this node knows it. `hash` is the SHA-256 of the secret; the secret itself is
/// nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// 16 hex characters; public.
    pub id: String,
    /// The user of this organisation the token speaks for.
    pub user: String,
    pub role: UserRole,
    /// Free text for people (which tool, which ticket); may be empty.
    pub label: String,
    pub created_ms: i64,
    /// The token is refused from this time on.
    pub expires_ms: i64,
    /// 0: not revoked.
    pub revoked_ms: i64,
    pub hash: [u8; 32],
    /// The operator who created it.
    pub created_by: String,
}

/// Who a request authenticated with a token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCaller {
    pub user: String,
    pub role: UserRole,
    pub token_id: String,
}

impl TokenRecord {
    fn from_stored(r: ApiTokenRecord) -> Result<TokenRecord, TokenError> {
        let corrupt = |detail: String| TokenError::Corrupt {
            id: r.id.clone(),
            detail,
        };
        let role = r
            .role
            .parse::<UserRole>()
            .map_err(|e| corrupt(e.to_string()))?;
        let hash = <[u8; 32]>::try_from(r.hash.as_slice()).map_err(|_| {
            corrupt(format!(
                "the secret's hash is {} bytes, not 32",
                r.hash.len()
            ))
        })?;
        Ok(TokenRecord {
            id: r.id,
            user: r.user,
            role,
            label: r.label,
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            revoked_ms: r.revoked_ms,
            hash,
            created_by: r.created_by,
        })
    }

    fn to_stored(&self) -> ApiTokenRecord {
        ApiTokenRecord {
            id: self.id.clone(),
            user: self.user.clone(),
            role: self.role.as_str().to_owned(),
            label: self.label.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            revoked_ms: self.revoked_ms,
            hash: self.hash.to_vec(),
            created_by: self.created_by.clone(),
        }
    }
}

// ---- the pure part ---------------------------------------------------------------------------

/// Splits a presented token into its `(id, secret)`. Surrounding whitespace is ignored;
/// anything else that is not exactly `bwt_<16 hex>_<64 hex>` (lowercase) is
/// [`TokenError::Malformed`], whose message never repeats what was presented.
pub fn parse(presented: &str) -> Result<(&str, &str), TokenError> {
    let rest = presented
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(TokenError::Malformed("it does not start with bwt_"))?;
    let (id, secret) = rest
        .split_once('_')
        .ok_or(TokenError::Malformed("it has no secret after the id"))?;
    if !is_hex(id, ID_BYTES) {
        return Err(TokenError::Malformed(
            "its id is not 16 lowercase hex characters",
        ));
    }
    if !is_hex(secret, SECRET_BYTES) {
        return Err(TokenError::Malformed(
            "its secret is not 64 lowercase hex characters",
        ));
    }
    Ok((id, secret))
}

/// Whether `secret` is the one `record` was created with, and `record` is still in force at
/// `now_ms`. The secret is checked first (in constant time), so only its holder learns
/// whether a token is revoked or expired.
pub fn check(record: &TokenRecord, secret: &str, now_ms: i64) -> Result<(), TokenError> {
    let presented = hash_secret(secret);
    if constant_time::verify_slices_are_equal(&presented, &record.hash).is_err() {
        return Err(TokenError::WrongSecret(record.id.clone()));
    }
    if record.revoked_ms != 0 {
        return Err(TokenError::Revoked {
            id: record.id.clone(),
            at: rfc3339(record.revoked_ms),
        });
    }
    if now_ms >= record.expires_ms {
        return Err(TokenError::Expired {
            id: record.id.clone(),
            at: rfc3339(record.expires_ms),
        });
    }
    Ok(())
}

/// Refuses a lifetime outside [`MIN_TTL_MS`]..=[`MAX_TTL_MS`], saying the range.
pub fn check_ttl(ttl_ms: i64) -> Result<(), TokenError> {
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        return Err(TokenError::Invalid(format!(
            "a lifetime of {} is out of range; choose between 1 hour and 400 days \
             (e.g. --expires-in 90d)",
            span(ttl_ms)
        )));
    }
    Ok(())
}

/// Whether `id` is a token id: 16 lowercase hex characters.
pub fn is_valid_id(id: &str) -> bool {
    is_hex(id, ID_BYTES)
}

fn is_hex(s: &str, bytes: usize) -> bool {
    s.len() == 2 * bytes && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hash_secret(secret: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn check_label(label: &str) -> Result<(), TokenError> {
    if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
        return Err(TokenError::Invalid(format!(
            "the label must be at most {MAX_LABEL_LEN} bytes of printable text (no line breaks \
             or control characters)"
        )));
    }
    Ok(())
}

/// `ms` as an RFC 3339 UTC time (for messages and audit records).
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}

/// A duration for people, in the largest whole unit: "90d", "12h", "30m", else milliseconds.
fn span(ms: i64) -> String {
    match ms {
        0 => "0".into(),
        ms if ms % DAY_MS == 0 => format!("{}d", ms / DAY_MS),
        ms if ms % HOUR_MS == 0 => format!("{}h", ms / HOUR_MS),
        ms if ms % MINUTE_MS == 0 => format!("{}m", ms / MINUTE_MS),
        ms => format!("{ms} ms"),
    }
}

// ---- the service over the store --------------------------------------------------------------

/// Creates a token for `user` (of this organisation) with `role`, valid for `ttl_ms` from
/// `now_ms`, recorded as made by `created_by`; audited in the same transaction. Returns the
/// record and the whole token: the only time the token exists outside the tool it is given to.
pub async fn create(
    store: &Store,
    user: &str,
    role: UserRole,
    label: &str,
    ttl_ms: i64,
    created_by: &str,
    now_ms: i64,
) -> Result<(TokenRecord, String), TokenError> {
    check_user_name(user).map_err(|e| TokenError::Invalid(e.to_string()))?;
    check_label(label)?;
    check_ttl(ttl_ms)?;
    let id = hex::encode(rand::random::<[u8; ID_BYTES]>());
    let secret = hex::encode(rand::random::<[u8; SECRET_BYTES]>());
    let record = TokenRecord {
        id: id.clone(),
        user: user.to_owned(),
        role,
        label: label.to_owned(),
        created_ms: now_ms,
        expires_ms: now_ms.saturating_add(ttl_ms),
        revoked_ms: 0,
        hash: hash_secret(&secret),
        created_by: created_by.to_owned(),
    };
    let audit = AuditEvent::token(format!(
        "created id={id} user={user:?} role={role} expires={} by={created_by:?} label={label:?}",
        rfc3339(record.expires_ms)
    ))
    .at(now_ms);
    store.put_api_token(record.to_stored(), vec![audit]).await?;
    tracing::info!(
        token.id = %id,
        token.user = %user,
        token.role = %role,
        token.expires_ms = record.expires_ms,
        by = %created_by,
        "API token created"
    );
    Ok((record, format!("{PREFIX}{id}_{secret}")))
}

/// Every token of this node (revoked and expired ones included), oldest first.
pub fn list(store: &Store) -> Result<Vec<TokenRecord>, TokenError> {
    let mut out = store
        .api_tokens()?
        .into_iter()
        .map(TokenRecord::from_stored)
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    Ok(out)
}

/// Revokes the token `id` at `now_ms` on behalf of `revoked_by` (audited in the same
/// transaction) and returns it as stored afterwards. Revoking a revoked token changes
/// nothing: its first revocation time stands. An unknown id is [`TokenError::Unknown`].
pub async fn revoke(
    store: &Store,
    id: &str,
    revoked_by: &str,
    now_ms: i64,
) -> Result<TokenRecord, TokenError> {
    if !is_valid_id(id) {
        return Err(TokenError::InvalidId);
    }
    let unknown = || TokenError::Unknown(id.to_owned());
    let current = TokenRecord::from_stored(store.api_token(id)?.ok_or_else(unknown)?)?;
    let audit = AuditEvent::token(format!(
        "revoked id={id} user={:?} role={} by={revoked_by:?}",
        current.user, current.role
    ))
    .at(now_ms);
    let after = store
        .revoke_api_token(id, now_ms, vec![audit])
        .await?
        .ok_or_else(unknown)?;
    let after = TokenRecord::from_stored(after)?;
    if current.revoked_ms == 0 {
        tracing::info!(
            token.id = %id,
            token.user = %after.user,
            token.role = %after.role,
            by = %revoked_by,
            "API token revoked"
        );
    }
    Ok(after)
}

/// What the TAXII server calls with the token a tool presented (the credential of an
/// `Authorization: Bearer` header, or the password of HTTP Basic): who the request speaks for,
/// or why it is refused. With HTTP Basic, the caller must also refuse a user name other than
/// [`TokenCaller::user`]. Reads the store only (one point lookup); logs nothing.
pub fn authenticate(
    store: &Store,
    presented: &str,
    now_ms: i64,
) -> Result<TokenCaller, TokenError> {
    let (id, secret) = parse(presented)?;
    let stored = store
        .api_token(id)?
        .ok_or_else(|| TokenError::Unknown(id.to_owned()))?;
    let record = TokenRecord::from_stored(stored)?;
    check(&record, secret, now_ms)?;
    Ok(TokenCaller {
        user: record.user,
        role: record.role,
        token_id: record.id,
    })
}

#[cfg(test)]
mod tests;
