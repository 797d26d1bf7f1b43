//! `bluewire token …`: per-user API tokens for tools that cannot present a client
//! certificate (TAXII feed readers, SIEM connectors). Operators create, list and revoke them
//! (`Admin.TokenCreate`, `TokenList`, `TokenRevoke`); the node keeps only a hash of each
//! secret, so `create` prints the token once and no command can print it again.

use bluewire_node::tokens;
use bluewire_proto::v1 as pb;
use clap::{Subcommand, ValueEnum};

use crate::Output;
use crate::connection::{ConnArgs, status_err};
use crate::output::{table, ts};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for one user of your organisation; it is printed once.
    Create {
        /// The user the token speaks for (as in user certificates).
        #[arg(long)]
        user: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Lifetime: a number and d (days), h (hours) or m (minutes); 1 hour to 400 days.
        #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
        expires_in: i64,
        /// Free text for people: which tool, which ticket.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Every token of the node, revoked and expired ones included (never their secrets).
    List,
    /// Revoke a token: tools using it are refused from now on.
    Revoke {
        /// The token's id (the ID column of `bluewire token list`).
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Analyst,
    Operator,
    SocTool,
}

impl From<RoleArg> for bluewire_node::pki::UserRole {
    fn from(r: RoleArg) -> Self {
        use bluewire_node::pki::UserRole;
        match r {
            RoleArg::Analyst => UserRole::Analyst,
            RoleArg::Operator => UserRole::Operator,
            RoleArg::SocTool => UserRole::SocTool,
        }
    }
}

/// `90d`, `12h`, `30m` → milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration: give a whole number followed by d (days), h (hours) or \
             m (minutes), e.g. 90d, 12h or 30m"
        )
    };
    let s = s.trim();
    let split = s.len().checked_sub(1).ok_or_else(bad)?;
    let (n, unit) = s.split_at_checked(split).ok_or_else(bad)?;
    let unit_ms: i64 = match unit {
        "d" => 24 * 60 * 60 * 1000,
        "h" => 60 * 60 * 1000,
        "m" => 60 * 1000,
        _ => return Err(bad()),
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    n.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or_else(|| format!("{s:?} is far too long; tokens live at most 400 days"))
}

fn state(t: &pb::TokenInfo, now_ms: i64) -> String {
    if t.revoked_at_ms != 0 {
        "revoked".into()
    } else if now_ms >= t.expires_at_ms {
        "expired".into()
    } else {
        "active".into()
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

pub fn info_json(t: &pb::TokenInfo, now_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "id": t.id, "user": t.user, "role": t.role, "label": t.label,
        "created_at_ms": t.created_at_ms, "expires_at_ms": t.expires_at_ms,
        "revoked_at_ms": t.revoked_at_ms, "created_by": t.created_by,
        "state": state(t, now_ms),
    })
}

pub async fn run(c: &ConnArgs, cmd: TokenCommand, out: Output) -> anyhow::Result<()> {
    // Refuse a lifetime out of range before connecting; the node checks it again.
    if let TokenCommand::Create { expires_in, .. } = &cmd {
        tokens::check_ttl(*expires_in)?;
    }
    let conn = c.connect()?;
    let mut admin = conn.admin();
    let err = |s| status_err(&conn, s);
    let now = bluewire_node::clock::now_ms();
    match cmd {
        TokenCommand::Create {
            user,
            role,
            expires_in,
            label,
        } => {
            let req = pb::TokenCreateRequest {
                user,
                role: bluewire_node::pki::UserRole::from(role).as_str().to_owned(),
                label,
                ttl_ms: expires_in,
            };
            let r = admin.token_create(req).await.map_err(err)?.into_inner();
            let info = r.info.unwrap_or_default();
            print_created(&info, &r.token, now, out)?;
        }
        TokenCommand::List => {
            let r = admin
                .token_list(pb::TokenListRequest {})
                .await
                .map_err(err)?
                .into_inner();
            print_list(&r.tokens, now, out);
        }
        TokenCommand::Revoke { id } => {
            let t = admin
                .token_revoke(pb::TokenRevokeRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            match out {
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&info_json(&t, now))?)
                }
                Output::Table => println!(
                    "API token {} ({}, {}) is revoked since {}; tools using it are refused",
                    t.id,
                    t.user,
                    t.role,
                    ts(t.revoked_at_ms)
                ),
            }
        }
    }
    Ok(())
}

fn print_created(info: &pb::TokenInfo, token: &str, now: i64, out: Output) -> anyhow::Result<()> {
    match out {
        Output::Json => {
            let mut v = info_json(info, now);
            v["token"] = token.into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => {
            println!(
                "created API token {} for {} ({}), expires {}",
                info.id,
                info.user,
                info.role,
                ts(info.expires_at_ms)
            );
            println!();
            println!("    {token}");
            println!();
            println!(
                "This is the only time the token is shown: the node keeps only a hash of it. \
                 Put it in the tool's secret store now."
            );
            println!("Present it to the node's TAXII server as an HTTP header:");
            println!("    Authorization: Bearer {token}");
            println!(
                "or with HTTP Basic authentication: user name {:?}, the token as the password.",
                info.user
            );
        }
    }
    Ok(())
}

fn print_list(list: &[pb::TokenInfo], now: i64, out: Output) {
    match out {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(list.iter().map(|t| info_json(t, now)).collect())
        ),
        Output::Table => table(
            &[
                "ID", "USER", "ROLE", "STATE", "EXPIRES", "CREATED", "BY", "REVOKED", "LABEL",
            ],
            &list
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.user.clone(),
                        t.role.clone(),
                        state(t, now),
                        ts(t.expires_at_ms),
                        ts(t.created_at_ms),
                        dash(&t.created_by),
                        ts(t.revoked_at_ms),
                        dash(&t.label),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn token(args: &[&str]) -> Result<TokenCommand, clap::Error> {
        let argv = ["bluewire", "token"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Token(t) => Ok(t),
            other => panic!("not a token command: {other:?}"),
        }
    }

    #[test]
    fn durations_are_days_hours_or_minutes() {
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400_000));
        assert_eq!(parse_duration("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_duration("30m"), Ok(30 * 60_000));
        for bad in [
            "", "d", "90", "90s", "-1d", "+1d", "1.5d", "9 0d", "d90", "1é",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("e.g. 90d, 12h or 30m"), "{bad}: {e}");
        }
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn create_takes_user_role_lifetime_and_label() {
        match token(&["create", "--user", "siem", "--role", "soc-tool"]).unwrap() {
            TokenCommand::Create {
                user,
                role,
                expires_in,
                label,
            } => {
                assert_eq!(user, "siem");
                assert_eq!(role, RoleArg::SocTool);
                assert_eq!(expires_in, tokens::DEFAULT_TTL_MS);
                assert_eq!(label, "");
            }
            other => panic!("{other:?}"),
        }
        match token(&[
            "create",
            "--user",
            "a",
            "--role",
            "analyst",
            "--expires-in",
            "12h",
            "--label",
            "MISP",
        ])
        .unwrap()
        {
            TokenCommand::Create {
                expires_in, label, ..
            } => assert_eq!((expires_in, label.as_str()), (12 * 3_600_000, "MISP")),
            other => panic!("{other:?}"),
        }
        assert!(token(&["create", "--user", "a", "--role", "admin"]).is_err());
        assert!(token(&["create", "--user", "a"]).is_err());
        let e = token(&[
            "create",
            "--user",
            "a",
            "--role",
            "analyst",
            "--expires-in",
            "3w",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("e.g. 90d, 12h or 30m"), "{e}");
    }

    #[test]
    fn list_shows_the_state_of_each_token() {
        let t = pb::TokenInfo {
            expires_at_ms: 1000,
            ..Default::default()
        };
        assert_eq!(state(&t, 999), "active");
        assert_eq!(state(&t, 1000), "expired");
        let revoked = pb::TokenInfo {
            revoked_at_ms: 5,
            ..t.clone()
        };
        assert_eq!(state(&revoked, 0), "revoked");
        assert_eq!(info_json(&revoked, 0)["state"], "revoked");
        assert!(info_json(&t, 0).get("hash").is_none());
    }
}
