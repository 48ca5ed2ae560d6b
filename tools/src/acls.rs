//! ACLs (KIP-140 with KIP-290's prefixed patterns): CreateAcls (api 30), DescribeAcls (api 29)
//! and DeleteAcls (api 31), with Kafka's codes for resource types, pattern types, operations
//! and permissions, their names as Kafka prints them (`TOPIC`, `LITERAL`, `DESCRIBE_CONFIGS`,
//! `ALLOW`), and the layout of kafka-acls.sh (`ResourcePattern(resourceType=TOPIC, ...)`,
//! `(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)`).

use std::fmt;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde::{Serialize, Serializer};

use crate::admin::kafka_check;
use crate::client::{error_name, Client, ClientError};

/// Resource types (Kafka's ResourceType codes).
pub mod resource {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
    /// The one name of the cluster resource.
    pub const CLUSTER_NAME: &str = "kafka-cluster";
}

/// Pattern types (PatternType codes); ANY and MATCH only in filters.
pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Operations (AclOperation codes); ANY only in filters.
pub mod op {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const CREATE_TOKENS: i8 = 13;
    pub const DESCRIBE_TOKENS: i8 = 14;
}

/// Permission types (AclPermissionType codes); ANY only in filters.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

const RESOURCE_NAMES: &[(i8, &str)] = &[
    (0, "UNKNOWN"),
    (resource::ANY, "ANY"),
    (resource::TOPIC, "TOPIC"),
    (resource::GROUP, "GROUP"),
    (resource::CLUSTER, "CLUSTER"),
    (resource::TRANSACTIONAL_ID, "TRANSACTIONAL_ID"),
    (resource::DELEGATION_TOKEN, "DELEGATION_TOKEN"),
    (resource::USER, "USER"),
];

const PATTERN_NAMES: &[(i8, &str)] = &[
    (0, "UNKNOWN"),
    (pattern::ANY, "ANY"),
    (pattern::MATCH, "MATCH"),
    (pattern::LITERAL, "LITERAL"),
    (pattern::PREFIXED, "PREFIXED"),
];

const OPERATION_NAMES: &[(i8, &str)] = &[
    (0, "UNKNOWN"),
    (op::ANY, "ANY"),
    (op::ALL, "ALL"),
    (op::READ, "READ"),
    (op::WRITE, "WRITE"),
    (op::CREATE, "CREATE"),
    (op::DELETE, "DELETE"),
    (op::ALTER, "ALTER"),
    (op::DESCRIBE, "DESCRIBE"),
    (op::CLUSTER_ACTION, "CLUSTER_ACTION"),
    (op::DESCRIBE_CONFIGS, "DESCRIBE_CONFIGS"),
    (op::ALTER_CONFIGS, "ALTER_CONFIGS"),
    (op::IDEMPOTENT_WRITE, "IDEMPOTENT_WRITE"),
    (op::CREATE_TOKENS, "CREATE_TOKENS"),
    (op::DESCRIBE_TOKENS, "DESCRIBE_TOKENS"),
];

const PERMISSION_NAMES: &[(i8, &str)] = &[
    (0, "UNKNOWN"),
    (permission::ANY, "ANY"),
    (permission::DENY, "DENY"),
    (permission::ALLOW, "ALLOW"),
];

fn name_of(table: &[(i8, &str)], code: i8) -> String {
    table
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("UNKNOWN({code})"), |(_, n)| (*n).to_string())
}

/// `TOPIC`, `GROUP`, ... for a resource type code.
pub fn resource_type_name(code: i8) -> String {
    name_of(RESOURCE_NAMES, code)
}

/// `LITERAL`, `PREFIXED`, ... for a pattern type code.
pub fn pattern_type_name(code: i8) -> String {
    name_of(PATTERN_NAMES, code)
}

/// `READ`, `DESCRIBE_CONFIGS`, ... for an operation code.
pub fn operation_name(code: i8) -> String {
    name_of(OPERATION_NAMES, code)
}

/// `ALLOW` or `DENY` for a permission code.
pub fn permission_name(code: i8) -> String {
    name_of(PERMISSION_NAMES, code)
}

/// An operation given by name, in any case, with or without `_`/`-` between words (`Read`,
/// `DescribeConfigs`, `DESCRIBE_CONFIGS`, `idempotent-write`). `ANY` is refused: it is a
/// filter value, not an operation.
pub fn parse_operation(s: &str) -> Result<i8, String> {
    let want: String = s
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    OPERATION_NAMES
        .iter()
        .filter(|(c, _)| *c >= op::ALL)
        .find(|(_, n)| n.replace('_', "").to_ascii_lowercase() == want)
        .map(|(c, _)| *c)
        .ok_or_else(|| {
            format!(
                "unknown operation {s:?} (one of All, Read, Write, Create, Delete, Alter, \
                 Describe, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, \
                 CreateTokens, DescribeTokens)"
            )
        })
}

/// The operations Kafka's AclCommand accepts on a resource type (`ALL` on every one).
pub fn operations_of(resource_type: i8) -> &'static [i8] {
    match resource_type {
        resource::TOPIC => &[
            op::READ,
            op::WRITE,
            op::CREATE,
            op::DESCRIBE,
            op::DELETE,
            op::ALTER,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
            op::ALL,
        ],
        resource::GROUP => &[op::READ, op::DESCRIBE, op::DELETE, op::ALL],
        resource::CLUSTER => &[
            op::CREATE,
            op::CLUSTER_ACTION,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
            op::IDEMPOTENT_WRITE,
            op::ALTER,
            op::DESCRIBE,
            op::ALL,
        ],
        resource::TRANSACTIONAL_ID => &[op::DESCRIBE, op::WRITE, op::ALL],
        resource::DELEGATION_TOKEN => &[op::DESCRIBE, op::ALL],
        resource::USER => &[op::CREATE_TOKENS, op::DESCRIBE_TOKENS, op::ALL],
        _ => &[],
    }
}

fn ser_resource_type<S: Serializer>(v: &i8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&resource_type_name(*v))
}

fn ser_pattern_type<S: Serializer>(v: &i8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&pattern_type_name(*v))
}

fn ser_operation<S: Serializer>(v: &i8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&operation_name(*v))
}

fn ser_permission<S: Serializer>(v: &i8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&permission_name(*v))
}

/// One ACL: a resource pattern and an access control entry. Ordered by resource (type, name,
/// pattern type), then principal, host, operation and permission. As JSON the codes are
/// Kafka's names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AclBinding {
    #[serde(serialize_with = "ser_resource_type")]
    pub resource_type: i8,
    pub name: String,
    #[serde(serialize_with = "ser_pattern_type")]
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    #[serde(serialize_with = "ser_operation")]
    pub operation: i8,
    #[serde(serialize_with = "ser_permission")]
    pub permission: i8,
}

impl AclBinding {
    /// Kafka's ResourcePattern.toString:
    /// `ResourcePattern(resourceType=TOPIC, name=Topic_Four, patternType=LITERAL)`.
    pub fn pattern_text(&self) -> String {
        format!(
            "ResourcePattern(resourceType={}, name={}, patternType={})",
            resource_type_name(self.resource_type),
            self.name,
            pattern_type_name(self.pattern_type)
        )
    }

    /// Kafka's AccessControlEntry.toString:
    /// `(principal=User:usercc, host=*, operation=WRITE, permissionType=ALLOW)`.
    pub fn entry_text(&self) -> String {
        format!(
            "(principal={}, host={}, operation={}, permissionType={})",
            self.principal,
            self.host,
            operation_name(self.operation),
            permission_name(self.permission)
        )
    }

    fn same_resource(&self, other: &AclBinding) -> bool {
        self.resource_type == other.resource_type
            && self.name == other.name
            && self.pattern_type == other.pattern_type
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pattern_text(), self.entry_text())
    }
}

/// kafka-acls.sh's listing of `bindings` (sorted and grouped by resource here): per resource
/// `<title> `ResourcePattern(...)`: ` and one `\t(principal=..., ...)` line per ACL, with a
/// blank line between resources. Empty for no bindings.
pub fn layout(title: &str, bindings: &[AclBinding]) -> String {
    let mut sorted = bindings.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut out = String::new();
    let mut prev: Option<&AclBinding> = None;
    for b in &sorted {
        if !prev.is_some_and(|p| p.same_resource(b)) {
            if prev.is_some() {
                out.push('\n');
            }
            out.push_str(&format!("{title} `{}`: \n", b.pattern_text()));
        }
        out.push('\t');
        out.push_str(&b.entry_text());
        out.push('\n');
        prev = Some(b);
    }
    out
}

/// A DescribeAcls / DeleteAcls filter: `None` names and the ANY codes match everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    /// Matches every ACL.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: resource::ANY,
            name: None,
            pattern_type: pattern::ANY,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        }
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn opt_sb(s: &Option<String>) -> Option<StrBytes> {
    s.as_deref().map(sb)
}

/// Per-item errors (code, message) of a batch as one [`ClientError::Kafka`]: when every item
/// failed alike, `what` alone; otherwise the first failure, with its item and the count.
fn batch_error(
    what: &str,
    total: usize,
    failures: Vec<(String, i16, Option<String>)>,
) -> Result<(), ClientError> {
    let Some((item, code, message)) = failures.first().cloned() else {
        return Ok(());
    };
    let message = message.filter(|m| !m.is_empty());
    let all_alike = failures.len() == total
        && failures.iter().all(|(_, c, m)| {
            *c == code && m.as_deref().filter(|m| !m.is_empty()) == message.as_deref()
        });
    let what = if all_alike {
        what.to_string()
    } else {
        format!(
            "{what} ({} of {total} failed; first {item})",
            failures.len()
        )
    };
    Err(ClientError::Kafka {
        what,
        code,
        name: error_name(code),
        message,
    })
}

impl Client {
    /// Creates `bindings` in one CreateAcls request. Refusals (SECURITY_DISABLED without an
    /// authorizer, CLUSTER_AUTHORIZATION_FAILED, INVALID_REQUEST) come back as one
    /// [`ClientError::Kafka`]; the bindings that did not fail are created.
    pub fn create_acls(&mut self, bindings: &[AclBinding]) -> Result<(), ClientError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let v = self.negotiate(ApiKey::CreateAcls, 1, 3)?;
        let req = CreateAclsRequest::default().with_creations(
            bindings
                .iter()
                .map(|b| {
                    AclCreation::default()
                        .with_resource_type(b.resource_type)
                        .with_resource_name(sb(&b.name))
                        .with_resource_pattern_type(b.pattern_type)
                        .with_principal(sb(&b.principal))
                        .with_host(sb(&b.host))
                        .with_operation(b.operation)
                        .with_permission_type(b.permission)
                })
                .collect(),
        );
        let resp: CreateAclsResponse = self.connection().call(ApiKey::CreateAcls, v, &req)?;
        if resp.results.len() != bindings.len() {
            return Err(ClientError::GaveUp(format!(
                "CreateAcls answered {} results for {} ACLs",
                resp.results.len(),
                bindings.len()
            )));
        }
        let failures = bindings
            .iter()
            .zip(&resp.results)
            .filter(|(_, r)| r.error_code != 0)
            .map(|(b, r)| {
                (
                    b.to_string(),
                    r.error_code,
                    r.error_message.as_ref().map(|m| m.to_string()),
                )
            })
            .collect();
        batch_error("creating ACLs", bindings.len(), failures)
    }

    /// The ACLs matching `filter` (DescribeAcls), sorted.
    pub fn describe_acls(&mut self, filter: &AclFilter) -> Result<Vec<AclBinding>, ClientError> {
        let v = self.negotiate(ApiKey::DescribeAcls, 1, 3)?;
        let req = DescribeAclsRequest::default()
            .with_resource_type_filter(filter.resource_type)
            .with_resource_name_filter(opt_sb(&filter.name))
            .with_pattern_type_filter(filter.pattern_type)
            .with_principal_filter(opt_sb(&filter.principal))
            .with_host_filter(opt_sb(&filter.host))
            .with_operation(filter.operation)
            .with_permission_type(filter.permission);
        let resp: DescribeAclsResponse = self.connection().call(ApiKey::DescribeAcls, v, &req)?;
        kafka_check(
            || "describing ACLs".into(),
            resp.error_code,
            resp.error_message.as_ref(),
        )?;
        let mut out = Vec::new();
        for r in &resp.resources {
            for a in &r.acls {
                out.push(AclBinding {
                    resource_type: r.resource_type,
                    name: r.resource_name.to_string(),
                    pattern_type: r.pattern_type,
                    principal: a.principal.to_string(),
                    host: a.host.to_string(),
                    operation: a.operation,
                    permission: a.permission_type,
                });
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes the ACLs matching any of `filters` (DeleteAcls); the ACLs deleted, sorted and
    /// without duplicates (one ACL can match several filters).
    pub fn delete_acls(&mut self, filters: &[AclFilter]) -> Result<Vec<AclBinding>, ClientError> {
        if filters.is_empty() {
            return Ok(Vec::new());
        }
        let v = self.negotiate(ApiKey::DeleteAcls, 1, 3)?;
        let req = DeleteAclsRequest::default().with_filters(
            filters
                .iter()
                .map(|f| {
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(f.resource_type)
                        .with_resource_name_filter(opt_sb(&f.name))
                        .with_pattern_type_filter(f.pattern_type)
                        .with_principal_filter(opt_sb(&f.principal))
                        .with_host_filter(opt_sb(&f.host))
                        .with_operation(f.operation)
                        .with_permission_type(f.permission)
                })
                .collect(),
        );
        let resp: DeleteAclsResponse = self.connection().call(ApiKey::DeleteAcls, v, &req)?;
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for (i, r) in resp.filter_results.iter().enumerate() {
            if r.error_code != 0 {
                failures.push((
                    format!("filter {}", i + 1),
                    r.error_code,
                    r.error_message.as_ref().map(|m| m.to_string()),
                ));
                continue;
            }
            for m in &r.matching_acls {
                if m.error_code != 0 {
                    let b = AclBinding {
                        resource_type: m.resource_type,
                        name: m.resource_name.to_string(),
                        pattern_type: m.pattern_type,
                        principal: m.principal.to_string(),
                        host: m.host.to_string(),
                        operation: m.operation,
                        permission: m.permission_type,
                    };
                    failures.push((
                        b.to_string(),
                        m.error_code,
                        m.error_message.as_ref().map(|m| m.to_string()),
                    ));
                    continue;
                }
                out.push(AclBinding {
                    resource_type: m.resource_type,
                    name: m.resource_name.to_string(),
                    pattern_type: m.pattern_type,
                    principal: m.principal.to_string(),
                    host: m.host.to_string(),
                    operation: m.operation,
                    permission: m.permission_type,
                });
            }
        }
        let total = failures.len().max(filters.len());
        batch_error("deleting ACLs", total, failures)?;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(rt: i8, name: &str, pt: i8, principal: &str, operation: i8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern_type: pt,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission: permission::ALLOW,
        }
    }

    #[test]
    fn operations_by_any_spelling() {
        assert_eq!(parse_operation("Read"), Ok(op::READ));
        assert_eq!(parse_operation("DescribeConfigs"), Ok(op::DESCRIBE_CONFIGS));
        assert_eq!(
            parse_operation("DESCRIBE_CONFIGS"),
            Ok(op::DESCRIBE_CONFIGS)
        );
        assert_eq!(
            parse_operation("idempotent-write"),
            Ok(op::IDEMPOTENT_WRITE)
        );
        assert_eq!(parse_operation("clusteraction"), Ok(op::CLUSTER_ACTION));
        assert_eq!(parse_operation("all"), Ok(op::ALL));
        assert!(parse_operation("any").is_err());
        assert!(parse_operation("Fly").is_err());
    }

    #[test]
    fn kafka_acls_layout() {
        let acls = vec![
            b(resource::TOPIC, "t", pattern::LITERAL, "User:a", op::WRITE),
            b(resource::GROUP, "*", pattern::LITERAL, "User:a", op::READ),
            b(
                resource::TOPIC,
                "t",
                pattern::LITERAL,
                "User:a",
                op::DESCRIBE_CONFIGS,
            ),
        ];
        assert_eq!(
            layout("Current ACLs for resource", &acls),
            "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=t, patternType=LITERAL)`: \n\
             \t(principal=User:a, host=*, operation=WRITE, permissionType=ALLOW)\n\
             \t(principal=User:a, host=*, operation=DESCRIBE_CONFIGS, permissionType=ALLOW)\n\
             \n\
             Current ACLs for resource `ResourcePattern(resourceType=GROUP, name=*, patternType=LITERAL)`: \n\
             \t(principal=User:a, host=*, operation=READ, permissionType=ALLOW)\n"
        );
        assert_eq!(layout("x", &[]), "");
    }

    #[test]
    fn json_names() {
        let v = serde_json::to_value(b(
            resource::TRANSACTIONAL_ID,
            "tx",
            pattern::PREFIXED,
            "User:a",
            op::IDEMPOTENT_WRITE,
        ))
        .expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "resource_type": "TRANSACTIONAL_ID", "name": "tx", "pattern_type": "PREFIXED",
                "principal": "User:a", "host": "*", "operation": "IDEMPOTENT_WRITE",
                "permission": "ALLOW"
            })
        );
        assert_eq!(operation_name(99), "UNKNOWN(99)");
    }

    #[test]
    fn batch_errors() {
        assert!(batch_error("x", 2, vec![]).is_ok());
        let same = vec![
            (
                "a".to_string(),
                54,
                Some("No Authorizer is configured.".to_string()),
            ),
            (
                "b".to_string(),
                54,
                Some("No Authorizer is configured.".to_string()),
            ),
        ];
        let e = batch_error("creating ACLs", 2, same).expect_err("fails");
        assert_eq!(
            e.to_string(),
            "creating ACLs: SecurityDisabled (error code 54): No Authorizer is configured."
        );
        let one = vec![("b".to_string(), 42, Some("bad".to_string()))];
        let e = batch_error("creating ACLs", 2, one).expect_err("fails");
        assert!(e
            .to_string()
            .starts_with("creating ACLs (1 of 2 failed; first b): "));
    }
}
