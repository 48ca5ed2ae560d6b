//! Kafka ACLs and the authorizer (Kafka's `StandardAuthorizer` semantics): bindings of
//! (resource type, name, pattern type) to (principal, host, operation, permission). A request is
//! allowed when the principal is a super user, or some ALLOW binding matches and no DENY does;
//! with `allow.everyone.if.no.acl.found=true` a resource no binding matches at all is open.
//! LITERAL names match exactly (`*` matches every name), PREFIXED ones match names starting
//! with them; principals `User:*` and hosts `*` match everyone. READ, WRITE, DELETE and ALTER
//! imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS, ALL implies everything.
//!
//! Bindings live in `<data>/__sluice/acls.json` on a single node (replaced durably before
//! CreateAcls/DeleteAcls answer) and in the metadata image in a cluster; every request reads the
//! current set, so a change applies at once to open connections.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

// Kafka's codes for resource types, pattern types, operations and permissions: the client
// library's, which prints them as kafka-acls.sh does.
pub use sluice_tools::acls::{op, pattern, permission, resource};

/// The name of the CLUSTER resource.
pub use sluice_tools::acls::resource::CLUSTER_NAME;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// DescribeAcls / DeleteAcls filter (None: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclBinding {
    /// Why this binding cannot be stored (Kafka's INVALID_REQUEST cases), if it cannot.
    pub fn invalid(&self) -> Option<String> {
        if !(resource::TOPIC..=resource::TRANSACTIONAL_ID).contains(&self.resource_type) {
            return Some(format!("Invalid resource type {}", self.resource_type));
        }
        if !matches!(self.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
            return Some("Invalid pattern type: only LITERAL and PREFIXED can be stored".into());
        }
        if !(op::ALL..=op::IDEMPOTENT_WRITE).contains(&self.operation) {
            return Some(format!("Invalid operation {}", self.operation));
        }
        if !matches!(self.permission, permission::ALLOW | permission::DENY) {
            return Some("Invalid permission type".into());
        }
        if self.resource_name.is_empty() {
            return Some("Resource name must not be empty".into());
        }
        if self.resource_type == resource::CLUSTER && self.resource_name != CLUSTER_NAME {
            return Some(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if !self.principal.contains(':') {
            return Some(format!(
                "Could not parse principal from `{}`",
                self.principal
            ));
        }
        None
    }

    fn name_matches(&self, name: &str) -> bool {
        match self.pattern_type {
            pattern::LITERAL => self.resource_name == "*" || self.resource_name == name,
            pattern::PREFIXED => name.starts_with(&self.resource_name),
            _ => false,
        }
    }

    /// Whether `self` grants (or, for DENY, forbids) `operation`.
    fn covers(&self, operation: i8) -> bool {
        if self.operation == op::ALL || self.operation == operation {
            return true;
        }
        // only ALLOW bindings imply the describe operations
        self.permission == permission::ALLOW
            && match operation {
                op::DESCRIBE => matches!(
                    self.operation,
                    op::READ | op::WRITE | op::DELETE | op::ALTER
                ),
                op::DESCRIBE_CONFIGS => self.operation == op::ALTER_CONFIGS,
                _ => false,
            }
    }
}

impl AclFilter {
    pub fn matches(&self, b: &AclBinding) -> bool {
        let rt = self.resource_type == resource::ANY || self.resource_type == b.resource_type;
        let name_and_pattern = match self.pattern_type {
            pattern::ANY => self
                .resource_name
                .as_ref()
                .is_none_or(|n| *n == b.resource_name),
            pattern::MATCH => self.resource_name.as_ref().is_none_or(|n| {
                // bindings that would apply to a resource named `n`
                b.name_matches(n)
            }),
            p => {
                p == b.pattern_type
                    && self
                        .resource_name
                        .as_ref()
                        .is_none_or(|n| *n == b.resource_name)
            }
        };
        rt && name_and_pattern
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == op::ANY || self.operation == b.operation)
            && (self.permission == permission::ANY || self.permission == b.permission)
    }
}

/// What is asked of the authorizer.
pub struct Ask<'a> {
    pub principal: &'a str,
    pub host: &'a str,
    pub operation: i8,
    pub resource_type: i8,
    pub name: &'a str,
}

/// The broker's policy around the bindings.
pub struct Policy<'a> {
    pub super_users: &'a [String],
    pub allow_if_no_acl: bool,
}

/// Decides from a set of bindings.
pub fn authorize(bindings: &BTreeSet<AclBinding>, policy: &Policy<'_>, ask: &Ask<'_>) -> bool {
    let Ask {
        principal,
        host,
        operation,
        resource_type,
        name,
    } = *ask;
    let (super_users, allow_if_no_acl) = (policy.super_users, policy.allow_if_no_acl);
    if super_users.iter().any(|u| u == principal) {
        return true;
    }
    let mut any_on_resource = false;
    let mut allowed = false;
    for b in bindings
        .iter()
        .filter(|b| b.resource_type == resource_type && b.name_matches(name))
    {
        any_on_resource = true;
        let who = b.principal == principal || b.principal == "User:*";
        let from = b.host == "*" || b.host == host;
        if !(who && from && b.covers(operation)) {
            continue;
        }
        if b.permission == permission::DENY {
            return false;
        }
        allowed = true;
    }
    allowed || (!any_on_resource && allow_if_no_acl)
}

/// The single-node store: `<data>/__sluice/acls.json`.
pub type LocalAcls = crate::jsonstore::JsonStore<BTreeSet<AclBinding>>;

/// Opens the single-node store.
pub fn open_local(data_dir: &std::path::Path) -> Result<Arc<LocalAcls>, String> {
    LocalAcls::open(data_dir, "acls.json")
}

pub fn apply(set: &mut BTreeSet<AclBinding>, add: &[AclBinding], remove: &[AclBinding]) {
    for b in remove {
        set.remove(b);
    }
    for b in add {
        set.insert(b.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(rt: i8, name: &str, pt: i8, who: &str, o: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: who.into(),
            host: "*".into(),
            operation: o,
            permission: perm,
        }
    }

    #[test]
    fn allow_deny_prefix_and_implication() {
        use permission::{ALLOW, DENY};
        let set: BTreeSet<_> = [
            b(
                resource::TOPIC,
                "Topic_Four",
                pattern::LITERAL,
                "User:usercc",
                op::WRITE,
                ALLOW,
            ),
            b(
                resource::TOPIC,
                "logs-",
                pattern::PREFIXED,
                "User:usercc",
                op::READ,
                ALLOW,
            ),
            b(
                resource::TOPIC,
                "logs-secret",
                pattern::LITERAL,
                "User:usercc",
                op::ALL,
                DENY,
            ),
            b(
                resource::GROUP,
                "*",
                pattern::LITERAL,
                "User:*",
                op::READ,
                ALLOW,
            ),
        ]
        .into_iter()
        .collect();
        let admins = ["User:admin".to_string()];
        let strict = Policy {
            super_users: &admins,
            allow_if_no_acl: false,
        };
        let open = Policy {
            super_users: &[],
            allow_if_no_acl: true,
        };
        let ask = |who: &'static str, o: i8, rt: i8, name: &'static str| Ask {
            principal: who,
            host: "1.2.3.4",
            operation: o,
            resource_type: rt,
            name,
        };
        let ok = |who, o, rt, name| authorize(&set, &strict, &ask(who, o, rt, name));
        assert!(ok("User:usercc", op::WRITE, resource::TOPIC, "Topic_Four"));
        assert!(
            ok("User:usercc", op::DESCRIBE, resource::TOPIC, "Topic_Four"),
            "implied"
        );
        assert!(!ok("User:usercc", op::READ, resource::TOPIC, "Topic_Four"));
        assert!(!ok("User:other", op::WRITE, resource::TOPIC, "Topic_Four"));
        assert!(ok("User:usercc", op::READ, resource::TOPIC, "logs-app"));
        assert!(
            !ok("User:usercc", op::READ, resource::TOPIC, "logs-secret"),
            "DENY wins"
        );
        assert!(ok("User:anyone", op::READ, resource::GROUP, "g1"));
        assert!(!ok("User:anyone", op::DELETE, resource::GROUP, "g1"));
        assert!(
            ok("User:admin", op::DELETE, resource::TOPIC, "whatever"),
            "super user"
        );
        assert!(!ok("User:x", op::READ, resource::TOPIC, "unlisted"));
        let unlisted = ask("User:x", op::READ, resource::TOPIC, "unlisted");
        assert!(authorize(&set, &open, &unlisted));
        let listed = ask("User:x", op::READ, resource::TOPIC, "Topic_Four");
        assert!(!authorize(&set, &open, &listed));
    }

    #[test]
    fn filters() {
        let lit = b(
            resource::TOPIC,
            "a",
            pattern::LITERAL,
            "User:u",
            op::READ,
            permission::ALLOW,
        );
        let pre = b(
            resource::TOPIC,
            "a",
            pattern::PREFIXED,
            "User:u",
            op::READ,
            permission::ALLOW,
        );
        let f = |pt: i8, name: Option<&str>| AclFilter {
            resource_type: resource::ANY,
            resource_name: name.map(String::from),
            pattern_type: pt,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        assert!(f(pattern::ANY, None).matches(&lit) && f(pattern::ANY, None).matches(&pre));
        assert!(f(pattern::LITERAL, Some("a")).matches(&lit));
        assert!(!f(pattern::LITERAL, Some("a")).matches(&pre));
        assert!(f(pattern::MATCH, Some("abc")).matches(&pre));
        assert!(!f(pattern::MATCH, Some("abc")).matches(&lit));
        assert!(lit.invalid().is_none());
        let mut bad = lit.clone();
        bad.pattern_type = pattern::MATCH;
        assert!(bad.invalid().is_some());
    }
}
