//! `sluice user scram set|list|delete`: SCRAM credentials (kafka-configs.sh --entity-type users
//! with SCRAM-SHA-256=[iterations=...,password=...]). The password is salted and hashed here;
//! only the salt and the salted password reach the broker.

use clap::Subcommand;
use serde::Serialize;
use sluice_tools::security::SaslMechanism;
use sluice_tools::users::{ScramCredential, ScramUpsert, RESOURCE_NOT_FOUND};

use crate::out::{self, CliError};
use crate::Global;

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// SCRAM credentials (SCRAM-SHA-256, SCRAM-SHA-512)
    #[command(subcommand)]
    Scram(ScramCmd),
}

#[derive(Debug, Subcommand)]
pub enum ScramCmd {
    /// Create or replace a user's credential for one mechanism
    Set {
        user: String,
        #[arg(long, value_enum, ignore_case = true)]
        mechanism: SaslMechanism,
        #[arg(long)]
        password: String,
        /// PBKDF2 iterations (4096..=16384)
        #[arg(long, default_value_t = 4096)]
        iterations: i32,
    },
    /// The users with SCRAM credentials and their mechanisms (all users when none is named)
    List { users: Vec<String> },
    /// Delete a user's credential for one mechanism
    Delete {
        user: String,
        #[arg(long, value_enum, ignore_case = true)]
        mechanism: SaslMechanism,
    },
}

fn scram_only(m: SaslMechanism) -> Result<(), CliError> {
    if m == SaslMechanism::Plain {
        return Err(CliError::usage(
            "--mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512",
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct Altered<'a> {
    user: &'a str,
    mechanism: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iterations: Option<i32>,
    result: &'a str,
}

pub fn run(g: &Global, cmd: UserCmd) -> Result<(), CliError> {
    let UserCmd::Scram(cmd) = cmd;
    match cmd {
        ScramCmd::Set {
            user,
            mechanism,
            password,
            iterations,
        } => {
            scram_only(mechanism)?;
            if !(sluice_tools::users::MIN_ITERATIONS..=sluice_tools::users::MAX_ITERATIONS)
                .contains(&iterations)
            {
                return Err(CliError::usage(format!(
                    "--iterations must be between {} and {}, not {iterations}",
                    sluice_tools::users::MIN_ITERATIONS,
                    sluice_tools::users::MAX_ITERATIONS
                )));
            }
            if password.is_empty() {
                return Err(CliError::usage("--password must not be empty"));
            }
            let mut client = out::connect(g, "sluice-cli")?;
            client.alter_user_scram_credentials(
                &[ScramUpsert {
                    user: user.clone(),
                    mechanism,
                    iterations,
                    password,
                }],
                &[],
            )?;
            if g.json() {
                return out::print_json(&Altered {
                    user: &user,
                    mechanism: mechanism.name(),
                    iterations: Some(iterations),
                    result: "set",
                });
            }
            out::print(&format!("Completed updating config for user {user}.\n"))
        }
        ScramCmd::Delete { user, mechanism } => {
            scram_only(mechanism)?;
            let mut client = out::connect(g, "sluice-cli")?;
            client.alter_user_scram_credentials(&[], &[(user.clone(), mechanism)])?;
            if g.json() {
                return out::print_json(&Altered {
                    user: &user,
                    mechanism: mechanism.name(),
                    iterations: None,
                    result: "deleted",
                });
            }
            out::print(&format!("Completed updating config for user {user}.\n"))
        }
        ScramCmd::List { users } => {
            let mut client = out::connect(g, "sluice-cli")?;
            let found = client.describe_user_scram_credentials(&users)?;
            // a user named but without credentials: as kafka-configs.sh, nothing to show
            let failed: Vec<String> = found
                .iter()
                .filter(|u| u.error_code != 0 && u.error_code != RESOURCE_NOT_FOUND)
                .map(|u| format!("user {}: {}", u.user, u.error.clone().unwrap_or_default()))
                .collect();
            if !failed.is_empty() {
                return Err(CliError::failed(failed.join("; ")));
            }
            let shown: Vec<_> = found
                .into_iter()
                .filter(|u| u.error_code == 0 && !u.credentials.is_empty())
                .collect();
            if g.json() {
                return out::print_json(&shown);
            }
            let mut text = String::new();
            for u in &shown {
                let creds: Vec<String> = u
                    .credentials
                    .iter()
                    .map(
                        |ScramCredential {
                             mechanism,
                             iterations,
                         }| {
                            format!("{mechanism}=iterations={iterations}")
                        },
                    )
                    .collect();
                text.push_str(&format!(
                    "SCRAM credential configs for user-principal '{}' are {}\n",
                    u.user,
                    creds.join(", ")
                ));
            }
            out::print(&text)
        }
    }
}
