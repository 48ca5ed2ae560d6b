//! Topic and log administration APIs (placeholders until implemented; not advertised).

use std::rc::Rc;

use kafka_protocol::messages::*;

use crate::shard::Shard;

pub async fn create_partitions(
    _s: &Rc<Shard>,
    _r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    CreatePartitionsResponse::default()
}
pub fn describe_configs(_s: &Rc<Shard>, _r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    DescribeConfigsResponse::default()
}
pub async fn alter_configs(_s: &Rc<Shard>, _r: AlterConfigsRequest) -> AlterConfigsResponse {
    AlterConfigsResponse::default()
}
pub async fn incremental_alter_configs(
    _s: &Rc<Shard>,
    _r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    IncrementalAlterConfigsResponse::default()
}
pub async fn delete_records(_s: &Rc<Shard>, _r: DeleteRecordsRequest) -> DeleteRecordsResponse {
    DeleteRecordsResponse::default()
}
pub async fn describe_log_dirs(
    _s: &Rc<Shard>,
    _r: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    DescribeLogDirsResponse::default()
}
pub fn describe_cluster(_s: &Rc<Shard>, _r: DescribeClusterRequest) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
}
