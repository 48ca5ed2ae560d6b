//! `sluice quota set|list|delete`: client quotas as `kafka-configs.sh --entity-type
//! users|clients` manages them (AlterClientQuotas, DescribeClientQuotas), with its options
//! and its output layout.
//!
//! Entities: `--entity-type` (users, clients; repeat for user + client-id) each paired in
//! order with an `--entity-name` (`<default>` for the default entity), or `--entity-default`
//! for the types left without a name.

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use sluice_tools::quotas::{entity_text, value_text, NameMatch, QuotaEntity};

use crate::out::{self, CliError};
use crate::Global;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum EntityType {
    #[value(alias = "user")]
    Users,
    #[value(alias = "client-id", alias = "client")]
    Clients,
}

impl EntityType {
    fn wire(self) -> &'static str {
        match self {
            EntityType::Users => "user",
            EntityType::Clients => "client-id",
        }
    }
}

#[derive(Debug, Args)]
pub struct EntityArgs {
    /// users or clients (repeat for a user and client-id pair)
    #[arg(long = "entity-type", value_enum, ignore_case = true)]
    types: Vec<EntityType>,
    /// The name of the entity type given in the same position (`<default>`: the default)
    #[arg(long = "entity-name")]
    names: Vec<String>,
    /// The types without an --entity-name are their default entity
    #[arg(long = "entity-default")]
    default: bool,
}

impl EntityArgs {
    /// (type, Some(name) / Some(None) default / None any), user first.
    fn components(&self) -> Result<Vec<(EntityType, NameMatch)>, CliError> {
        if self.names.len() > self.types.len() {
            return Err(CliError::usage(
                "each --entity-name needs an --entity-type before it",
            ));
        }
        let mut out: Vec<(EntityType, NameMatch)> = Vec::new();
        for (i, t) in self.types.iter().enumerate() {
            if out.iter().any(|(o, _)| o == t) {
                return Err(CliError::usage(format!(
                    "--entity-type {} given twice",
                    t.wire()
                )));
            }
            let m = match self.names.get(i) {
                Some(n) if n == "<default>" => Some(None),
                Some(n) if n.is_empty() => {
                    return Err(CliError::usage("--entity-name must not be empty"))
                }
                Some(n) => Some(Some(n.clone())),
                None if self.default => Some(None),
                None => None,
            };
            out.push((*t, m));
        }
        out.sort_by_key(|(t, _)| *t);
        Ok(out)
    }

    /// A fully named entity (set, delete).
    fn entity(&self) -> Result<QuotaEntity, CliError> {
        let comps = self.components()?;
        if comps.is_empty() {
            return Err(CliError::usage(
                "an entity is required: --entity-type users|clients with --entity-name or \
                 --entity-default",
            ));
        }
        comps
            .into_iter()
            .map(|(t, m)| match m {
                Some(name) => Ok((t.wire().to_string(), name)),
                None => Err(CliError::usage(format!(
                    "--entity-type {} needs an --entity-name or --entity-default",
                    t.wire()
                ))),
            })
            .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Set quota values on an entity (kafka-configs.sh --alter --add-config)
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// key=value[,key=value...]: producer_byte_rate, consumer_byte_rate (bytes/s),
        /// request_percentage (percent of one request-handling thread)
        #[arg(long = "add-config", required = true)]
        add_config: String,
        /// Validate on the broker without changing anything
        #[arg(long)]
        validate_only: bool,
    },
    /// The quotas of the entities matching (all of them when no --entity-type is given;
    /// a type without a name matches any name) (kafka-configs.sh --describe)
    List {
        #[command(flatten)]
        entity: EntityArgs,
    },
    /// Remove quota values from an entity: the keys given, or all of them (kafka-configs.sh
    /// --alter --delete-config)
    Delete {
        #[command(flatten)]
        entity: EntityArgs,
        /// key[,key...]
        #[arg(long = "delete-config")]
        delete_config: Option<String>,
    },
}

#[derive(Serialize)]
struct Altered<'a> {
    entity: &'a QuotaEntity,
    set: Vec<(String, f64)>,
    removed: Vec<String>,
    validate_only: bool,
}

fn parse_add(s: &str) -> Result<Vec<(String, f64)>, CliError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = out::parse_kv(p.trim()).map_err(CliError::usage)?;
            let v: f64 = v.trim().parse().map_err(|_| {
                CliError::usage(format!("{k}: {v:?} is not a number (e.g. {k}=1024)"))
            })?;
            Ok((k, v))
        })
        .collect()
}

/// kafka-configs.sh's closing line.
fn completed(entity: &QuotaEntity) -> String {
    let (t, n) = &entity[0];
    let ty = if t == "user" { "user" } else { "client" };
    match n {
        Some(n) => format!("Completed updating config for {ty} {n}.\n"),
        None => format!("Completed updating default config for {ty}s in the cluster.\n"),
    }
}

pub fn run(g: &Global, cmd: QuotaCmd) -> Result<(), CliError> {
    match cmd {
        QuotaCmd::Set {
            entity,
            add_config,
            validate_only,
        } => {
            let entity = entity.entity()?;
            let set = parse_add(&add_config)?;
            if set.is_empty() {
                return Err(CliError::usage("--add-config needs key=value"));
            }
            let ops: Vec<(String, Option<f64>)> =
                set.iter().map(|(k, v)| (k.clone(), Some(*v))).collect();
            let mut client = out::connect(g, "sluice-cli")?;
            client.alter_client_quotas(&entity, &ops, validate_only)?;
            if g.json() {
                return out::print_json(&Altered {
                    entity: &entity,
                    set,
                    removed: vec![],
                    validate_only,
                });
            }
            out::print(&completed(&entity))
        }
        QuotaCmd::Delete {
            entity,
            delete_config,
        } => {
            let entity = entity.entity()?;
            let mut client = out::connect(g, "sluice-cli")?;
            let keys: Vec<String> = match delete_config {
                Some(k) => k
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                None => {
                    let comps: Vec<(String, NameMatch)> = entity
                        .iter()
                        .map(|(t, n)| (t.clone(), Some(n.clone())))
                        .collect();
                    client
                        .describe_client_quotas(&comps, true)?
                        .into_iter()
                        .flat_map(|e| e.values.into_iter().map(|(k, _)| k))
                        .collect()
                }
            };
            if keys.is_empty() {
                return Err(CliError::failed(format!(
                    "{} has no quotas to delete",
                    entity_text(&entity)
                )));
            }
            let ops: Vec<(String, Option<f64>)> = keys.iter().map(|k| (k.clone(), None)).collect();
            client.alter_client_quotas(&entity, &ops, false)?;
            if g.json() {
                return out::print_json(&Altered {
                    entity: &entity,
                    set: vec![],
                    removed: keys,
                    validate_only: false,
                });
            }
            out::print(&completed(&entity))
        }
        QuotaCmd::List { entity } => {
            let comps: Vec<(String, NameMatch)> = entity
                .components()?
                .into_iter()
                .map(|(t, m)| (t.wire().to_string(), m))
                .collect();
            let strict = !comps.is_empty();
            let mut client = out::connect(g, "sluice-cli")?;
            let found = client.describe_client_quotas(&comps, strict)?;
            if g.json() {
                return out::print_json(&found);
            }
            let mut text = String::new();
            for e in &found {
                let values: Vec<String> = e
                    .values
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_text(*v)))
                    .collect();
                text.push_str(&format!(
                    "Quota configs for {} are {}\n",
                    entity_text(&e.entity),
                    values.join(", ")
                ));
            }
            out::print(&text)
        }
    }
}
