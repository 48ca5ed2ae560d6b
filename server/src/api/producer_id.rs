//! InitProducerId for idempotent producers: a producer id unique for the life of the data
//! directory (persisted in the catalog before it is handed out) and its epoch. Clients with
//! idempotence on by default (Java 3+, kafka-python 3) call this before producing; partitions
//! then de-duplicate their retries by sequence number (`sluice_engine::producer`).
//! Transactional producers are served by `super::txn`.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::codes;
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    // KIP-360: an idempotent producer may ask to bump its epoch
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    let allocated = shard.shared.allocate_producer_id();
    match allocated {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "allocating a producer id failed");
            InitProducerIdResponse::default()
                .with_error_code(codes::KAFKA_STORAGE_ERROR)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
