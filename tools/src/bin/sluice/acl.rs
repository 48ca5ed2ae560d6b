//! `sluice acl add|list|remove`: ACLs as kafka-acls.sh manages them (CreateAcls, DescribeAcls,
//! DeleteAcls), with its options and its output layout.

use clap::{Args, Subcommand, ValueEnum};
use sluice_tools::acls::{
    self, op, operation_name, operations_of, pattern, permission, resource, resource_type_name,
    AclBinding, AclFilter,
};
use sluice_tools::ClientError;

use crate::out::{self, CliError};
use crate::Global;

#[derive(Debug, Subcommand)]
pub enum AclCmd {
    /// Add ACLs: one per principal, host, operation and resource (kafka-acls.sh --add)
    Add(AddArgs),
    /// List ACLs, all of them or those of the resources and principals named (kafka-acls.sh
    /// --list)
    List(ListArgs),
    /// Remove the ACLs matching a filter: what is not given matches anything (kafka-acls.sh
    /// --remove); prints the ACLs removed
    Remove(RemoveArgs),
}

/// The resources of an ACL (repeatable, combinable).
#[derive(Debug, Args)]
pub struct ResourceArgs {
    /// A topic (`*` for every topic)
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// A consumer group (`*` for every group)
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// The cluster (resource `kafka-cluster`)
    #[arg(long)]
    cluster: bool,
    /// A transactional id (`*` for every one)
    #[arg(long = "transactional-id", value_name = "ID")]
    transactional_ids: Vec<String>,
}

impl ResourceArgs {
    /// (resource type, name) of each resource given, in order.
    fn resources(&self) -> Vec<(i8, String)> {
        let mut out = Vec::new();
        out.extend(self.topics.iter().map(|t| (resource::TOPIC, t.clone())));
        out.extend(self.groups.iter().map(|g| (resource::GROUP, g.clone())));
        if self.cluster {
            out.push((resource::CLUSTER, resource::CLUSTER_NAME.to_string()));
        }
        out.extend(
            self.transactional_ids
                .iter()
                .map(|x| (resource::TRANSACTIONAL_ID, x.clone())),
        );
        out
    }
}

/// Who and from where (principals `Type:name`, e.g. `User:alice`).
#[derive(Debug, Args)]
pub struct EntryArgs {
    /// A principal to ALLOW (repeatable), e.g. User:alice
    #[arg(long = "allow-principal", value_name = "PRINCIPAL", value_parser = parse_principal)]
    allow_principals: Vec<String>,
    /// A principal to DENY (repeatable)
    #[arg(long = "deny-principal", value_name = "PRINCIPAL", value_parser = parse_principal)]
    deny_principals: Vec<String>,
    /// A host (IP address, or `*`) the --allow-principal ACLs apply to (repeatable)
    #[arg(
        long = "allow-host",
        value_name = "HOST",
        requires = "allow_principals"
    )]
    allow_hosts: Vec<String>,
    /// A host (IP address, or `*`) the --deny-principal ACLs apply to (repeatable)
    #[arg(long = "deny-host", value_name = "HOST", requires = "deny_principals")]
    deny_hosts: Vec<String>,
}

impl EntryArgs {
    fn given(&self) -> bool {
        !self.allow_principals.is_empty() || !self.deny_principals.is_empty()
    }

    /// (principal, permission, host) of each entry; `default_host` for principals without
    /// --allow-host / --deny-host.
    fn entries(&self, default_host: Option<&str>) -> Vec<(String, i8, Option<String>)> {
        let mut out = Vec::new();
        let mut add = |principals: &[String], hosts: &[String], perm: i8| {
            for p in principals {
                if hosts.is_empty() {
                    out.push((p.clone(), perm, default_host.map(str::to_string)));
                }
                for h in hosts {
                    out.push((p.clone(), perm, Some(h.clone())));
                }
            }
        };
        add(&self.allow_principals, &self.allow_hosts, permission::ALLOW);
        add(&self.deny_principals, &self.deny_hosts, permission::DENY);
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AddPattern {
    Literal,
    Prefixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilterPattern {
    Any,
    Match,
    Literal,
    Prefixed,
}

impl FilterPattern {
    fn code(self) -> i8 {
        match self {
            FilterPattern::Any => pattern::ANY,
            FilterPattern::Match => pattern::MATCH,
            FilterPattern::Literal => pattern::LITERAL,
            FilterPattern::Prefixed => pattern::PREFIXED,
        }
    }
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    entry: EntryArgs,
    /// An operation (repeatable): All, Read, Write, Create, Delete, Alter, Describe,
    /// ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite (any case)
    #[arg(long = "operation", value_name = "OPERATION", required = true,
          value_parser = acls::parse_operation)]
    operations: Vec<i8>,
    #[command(flatten)]
    resources: ResourceArgs,
    /// literal: the resource named; prefixed: every resource whose name starts with it
    #[arg(long = "resource-pattern-type", value_enum, ignore_case = true,
          default_value_t = AddPattern::Literal)]
    pattern: AddPattern,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    /// Only the ACLs of this principal (repeatable), e.g. User:alice
    #[arg(long = "principal", value_name = "PRINCIPAL", value_parser = parse_principal)]
    principals: Vec<String>,
    /// any (default): ACLs of exactly the names given, literal or prefixed; match: every ACL
    /// that applies to the resources named (literal, prefixed and `*`); literal; prefixed
    #[arg(long = "resource-pattern-type", value_enum, ignore_case = true)]
    pattern: Option<FilterPattern>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    entry: EntryArgs,
    /// Only ACLs of this principal, allowed or denied (repeatable)
    #[arg(long = "principal", value_name = "PRINCIPAL", value_parser = parse_principal)]
    principals: Vec<String>,
    /// Only ACLs of this operation (repeatable; any operation when not given)
    #[arg(long = "operation", value_name = "OPERATION", value_parser = acls::parse_operation)]
    operations: Vec<i8>,
    #[command(flatten)]
    resources: ResourceArgs,
    /// any (default), match, literal or prefixed, as for `acl list`
    #[arg(long = "resource-pattern-type", value_enum, ignore_case = true)]
    pattern: Option<FilterPattern>,
    /// Remove every ACL matching the other options, even with no resource or principal named
    /// (alone: every ACL of the cluster)
    #[arg(long)]
    all: bool,
}

/// `Type:name` (Kafka's principal syntax; `User:*` for every user).
fn parse_principal(s: &str) -> Result<String, String> {
    match s.split_once(':') {
        Some((t, n)) if !t.is_empty() && !n.is_empty() => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not a principal: expected Type:name, e.g. User:alice"
        )),
    }
}

/// Broker errors with the command as their context (`acl add: SecurityDisabled ...`).
fn in_cmd(cmd: &'static str, generic: &'static str) -> impl Fn(ClientError) -> CliError {
    move |e| match e {
        ClientError::Kafka {
            what,
            code,
            name,
            message,
        } => CliError::Client(ClientError::Kafka {
            what: match what.strip_prefix(generic) {
                Some(rest) => format!("{cmd}{rest}"),
                None => format!("{cmd}: {what}"),
            },
            code,
            name,
            message,
        }),
        other => CliError::Client(other),
    }
}

fn show(g: &Global, title: &str, bindings: &[AclBinding]) -> Result<(), CliError> {
    let mut sorted = bindings.to_vec();
    sorted.sort();
    sorted.dedup();
    if g.json() {
        return out::print_json(&sorted);
    }
    out::print(&acls::layout(title, &sorted))
}

pub fn run(g: &Global, cmd: AclCmd) -> Result<(), CliError> {
    match cmd {
        AclCmd::Add(a) => add(g, a),
        AclCmd::List(a) => list(g, a),
        AclCmd::Remove(a) => remove(g, a),
    }
}

fn add(g: &Global, a: AddArgs) -> Result<(), CliError> {
    let resources = a.resources.resources();
    if resources.is_empty() {
        return Err(CliError::usage(
            "a resource is required: --topic, --group, --cluster or --transactional-id",
        ));
    }
    if !a.entry.given() {
        return Err(CliError::usage(
            "a principal is required: --allow-principal or --deny-principal",
        ));
    }
    for (rt, _) in &resources {
        let valid = operations_of(*rt);
        if let Some(bad) = a.operations.iter().find(|o| !valid.contains(o)) {
            let names: Vec<String> = valid.iter().map(|o| operation_name(*o)).collect();
            return Err(CliError::usage(format!(
                "operation {} is not valid on a {} (it takes {})",
                operation_name(*bad),
                resource_type_name(*rt),
                names.join(", ")
            )));
        }
    }
    let pattern_type = match a.pattern {
        AddPattern::Literal => pattern::LITERAL,
        AddPattern::Prefixed => pattern::PREFIXED,
    };
    let mut bindings = Vec::new();
    for (rt, name) in &resources {
        for (principal, perm, host) in a.entry.entries(Some("*")) {
            for operation in &a.operations {
                bindings.push(AclBinding {
                    resource_type: *rt,
                    name: name.clone(),
                    pattern_type,
                    principal: principal.clone(),
                    host: host.clone().unwrap_or_else(|| "*".into()),
                    operation: *operation,
                    permission: perm,
                });
            }
        }
    }
    bindings.sort();
    bindings.dedup();
    let mut client = out::connect(g, "sluice-cli")?;
    client
        .create_acls(&bindings)
        .map_err(in_cmd("acl add", "creating ACLs"))?;
    show(g, "Adding ACLs for resource", &bindings)
}

/// (resource type, name) filters for the resources given, or one matching every resource.
fn resource_filters(r: &ResourceArgs) -> Vec<(i8, Option<String>)> {
    let given: Vec<(i8, Option<String>)> = r
        .resources()
        .into_iter()
        .map(|(t, n)| (t, Some(n)))
        .collect();
    if given.is_empty() {
        vec![(resource::ANY, None)]
    } else {
        given
    }
}

fn list(g: &Global, a: ListArgs) -> Result<(), CliError> {
    let pattern_type = a.pattern.map_or(pattern::ANY, FilterPattern::code);
    let principals: Vec<Option<String>> = if a.principals.is_empty() {
        vec![None]
    } else {
        a.principals.iter().cloned().map(Some).collect()
    };
    let mut client = out::connect(g, "sluice-cli")?;
    let mut found = Vec::new();
    for (resource_type, name) in resource_filters(&a.resources) {
        for principal in &principals {
            let filter = AclFilter {
                resource_type,
                name: name.clone(),
                pattern_type,
                principal: principal.clone(),
                ..AclFilter::any()
            };
            found.extend(
                client
                    .describe_acls(&filter)
                    .map_err(in_cmd("acl list", "describing ACLs"))?,
            );
        }
    }
    show(g, "Current ACLs for resource", &found)
}

fn remove(g: &Global, a: RemoveArgs) -> Result<(), CliError> {
    let named = !a.resources.resources().is_empty() || a.entry.given() || !a.principals.is_empty();
    if !named && !a.all {
        return Err(CliError::usage(
            "refusing to remove ACLs of every resource and principal: name a resource \
             (--topic, --group, --cluster, --transactional-id) or a principal \
             (--allow-principal, --deny-principal, --principal), or give --all",
        ));
    }
    let pattern_type = a.pattern.map_or(pattern::ANY, FilterPattern::code);
    let mut entries: Vec<(Option<String>, i8, Option<String>)> = a
        .entry
        .entries(None)
        .into_iter()
        .map(|(p, perm, h)| (Some(p), perm, h))
        .collect();
    entries.extend(
        a.principals
            .iter()
            .map(|p| (Some(p.clone()), permission::ANY, None)),
    );
    if entries.is_empty() {
        entries.push((None, permission::ANY, None));
    }
    let operations = if a.operations.is_empty() {
        vec![op::ANY]
    } else {
        a.operations.clone()
    };
    let mut filters = Vec::new();
    for (resource_type, name) in resource_filters(&a.resources) {
        for (principal, perm, host) in &entries {
            for operation in &operations {
                filters.push(AclFilter {
                    resource_type,
                    name: name.clone(),
                    pattern_type,
                    principal: principal.clone(),
                    host: host.clone(),
                    operation: *operation,
                    permission: *perm,
                });
            }
        }
    }
    let mut client = out::connect(g, "sluice-cli")?;
    let removed = client
        .delete_acls(&filters)
        .map_err(in_cmd("acl remove", "deleting ACLs"))?;
    show(g, "Removed ACLs for resource", &removed)
}
