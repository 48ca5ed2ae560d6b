//! CreateAcls, DescribeAcls and DeleteAcls (ALTER and DESCRIBE on the cluster). Without an
//! authorizer (`authorizer.class.name` unset) they answer SECURITY_DISABLED, as Kafka does.
//! Changes are durable on a single node and go through the metadata quorum in a cluster.

use std::rc::Rc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::codes;
use crate::security::acl::{op, AclBinding, AclFilter};
use crate::security::Authz;
use crate::shard::Shard;

pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const SECURITY_DISABLED: i16 = 54;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|x| x.to_string())
}

/// Whether the principal may manage (`operation`: ALTER) or list (DESCRIBE) ACLs: the error to
/// answer when not (no authorizer at all, or no such right on the cluster).
fn may(authz: &Authz<'_>, operation: i8) -> Result<(), (i16, &'static str)> {
    if !authz.enabled() {
        return Err((SECURITY_DISABLED, "No Authorizer is configured."));
    }
    if !authz.cluster(operation) {
        return Err((
            CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        ));
    }
    Ok(())
}

/// A DescribeAcls / DeleteAcls filter (both carry the same fields).
macro_rules! filter_of {
    ($f:expr) => {
        AclFilter {
            resource_type: $f.resource_type_filter,
            resource_name: opt(&$f.resource_name_filter),
            pattern_type: $f.pattern_type_filter,
            principal: opt(&$f.principal_filter),
            host: opt(&$f.host_filter),
            operation: $f.operation,
            permission: $f.permission_type,
        }
    };
}

/// Stores the change; the error message if it could not be.
async fn change(
    shard: &Rc<Shard>,
    add: Vec<AclBinding>,
    remove: Vec<AclBinding>,
) -> Result<(), String> {
    if !shard.shared.is_clustered() {
        return shard
            .shared
            .security
            .acls
            .change_off_reactor(move |set| crate::security::acl::apply(set, &add, &remove))
            .await;
    }
    let Some(member) = shard.shared.cluster.get().cloned() else {
        return Err("not in a cluster".into());
    };
    let cmd = crate::cluster::image::Command::ChangeAcls { add, remove };
    match glommio::executor()
        .spawn_blocking(move || member.propose(cmd))
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e),
    }
}

pub async fn create(
    shard: &Rc<Shard>,
    req: CreateAclsRequest,
    authz: &Authz<'_>,
) -> CreateAclsResponse {
    let refuse = |code: i16, m: &str| {
        let results = req
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(s(m)))
            })
            .collect();
        CreateAclsResponse::default().with_results(results)
    };
    if let Err((code, m)) = may(authz, op::ALTER) {
        return refuse(code, m);
    }
    let mut results = Vec::new();
    let mut add = Vec::new();
    for c in &req.creations {
        let b = AclBinding {
            resource_type: c.resource_type,
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission: c.permission_type,
        };
        match b.invalid() {
            Some(m) => results.push(Some((codes::INVALID_REQUEST, m))),
            None => {
                results.push(None);
                add.push(b);
            }
        }
    }
    let stored = if add.is_empty() {
        Ok(())
    } else {
        change(shard, add, Vec::new()).await
    };
    let results = results
        .into_iter()
        .map(|r| match (r, &stored) {
            (Some((code, m)), _) => AclCreationResult::default()
                .with_error_code(code)
                .with_error_message(Some(s(m))),
            (None, Err(e)) => AclCreationResult::default()
                .with_error_code(codes::UNKNOWN_SERVER_ERROR)
                .with_error_message(Some(s(e.as_str()))),
            (None, Ok(())) => AclCreationResult::default(),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub fn describe(
    shard: &Rc<Shard>,
    req: DescribeAclsRequest,
    authz: &Authz<'_>,
) -> DescribeAclsResponse {
    if let Err((code, m)) = may(authz, op::DESCRIBE) {
        return DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(m)));
    }
    let filter = filter_of!(req);
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for b in shard
        .shared
        .acl_bindings()
        .set()
        .iter()
        .filter(|b| filter.matches(b))
    {
        let d = AclDescription::default()
            .with_principal(s(b.principal.as_str()))
            .with_host(s(b.host.as_str()))
            .with_operation(b.operation)
            .with_permission_type(b.permission);
        match resources.iter_mut().find(|r| {
            r.resource_type == b.resource_type
                && r.resource_name.as_str() == b.resource_name
                && r.pattern_type == b.pattern_type
        }) {
            Some(r) => r.acls.push(d),
            None => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type)
                    .with_resource_name(s(b.resource_name.as_str()))
                    .with_pattern_type(b.pattern_type)
                    .with_acls(vec![d]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete(
    shard: &Rc<Shard>,
    req: DeleteAclsRequest,
    authz: &Authz<'_>,
) -> DeleteAclsResponse {
    let refuse = |code: i16, m: &str| {
        let results = req
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(s(m)))
            })
            .collect();
        DeleteAclsResponse::default().with_filter_results(results)
    };
    if let Err((code, m)) = may(authz, op::ALTER) {
        return refuse(code, m);
    }
    let bindings = shard.shared.acl_bindings();
    let current = bindings.set();
    let mut per_filter = Vec::new();
    let mut remove = std::collections::BTreeSet::new();
    for f in &req.filters {
        let filter = filter_of!(f);
        let matched: Vec<AclBinding> = current
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect();
        remove.extend(matched.iter().cloned());
        per_filter.push(matched);
    }
    let stored = if remove.is_empty() {
        Ok(())
    } else {
        change(shard, Vec::new(), remove.into_iter().collect()).await
    };
    let results = per_filter
        .into_iter()
        .map(|matched| match &stored {
            Err(e) => DeleteAclsFilterResult::default()
                .with_error_code(codes::UNKNOWN_SERVER_ERROR)
                .with_error_message(Some(s(e.as_str()))),
            Ok(()) => DeleteAclsFilterResult::default().with_matching_acls(
                matched
                    .into_iter()
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type)
                            .with_resource_name(s(b.resource_name))
                            .with_pattern_type(b.pattern_type)
                            .with_principal(s(b.principal))
                            .with_host(s(b.host))
                            .with_operation(b.operation)
                            .with_permission_type(b.permission)
                    })
                    .collect(),
            ),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
