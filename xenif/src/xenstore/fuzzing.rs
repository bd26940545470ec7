//! Entry points for the `xs_request` and `xs_reply` fuzz targets (`fuzz/`), also used by
//! `cargo test` to replay their committed corpora. Each accepts any bytes; a panic is a bug.

use super::wire::{self, Incoming, Message, PAYLOAD_MAX};
use crate::sim::xenstored::store::{NoDomainControl, Quotas, Store};
use crate::types::DomId;

/// Most messages one input may drive (inputs are small; this only bounds the work).
const MAX_MESSAGES: usize = 4096;

/// Server direction: decodes a byte stream as client requests and runs each through the
/// simulated xenstored's state machine, as dom0, domain 1 or domain 2 (chosen by the
/// request id), checking that every reply and event is a well-formed message.
pub fn requests(data: &[u8]) {
    let quotas = Quotas {
        nodes_per_domain: 64,
        watches_per_domain: 8,
        transactions_per_connection: 4,
        perms_per_node: 5,
        value_size: 256,
        transaction_nodes: 32,
    };
    let mut store = Store::new(quotas);
    let mut events = Vec::new();
    for d in [1, 2] {
        // Cannot fail on a fresh store; ignore rather than unwrap in a fuzz entry point.
        let _ = store.introduce(DomId(d), None, &mut NoDomainControl, &mut events);
    }
    let mut conns = [
        store.connect(DomId(0)),
        store.connect(DomId(1)),
        store.connect(DomId(2)),
    ];
    let mut input = data;
    for _ in 0..MAX_MESSAGES {
        let msg = match wire::read_message(&mut input) {
            Ok(Some(m)) => m,
            _ => break,
        };
        let i = (msg.req_id % 3) as usize;
        if msg.req_id % 97 == 96 {
            // Occasionally a client goes away mid-stream.
            store.disconnect(conns[i]);
            conns[i] = store.connect(DomId(i as u16));
            continue;
        }
        let out = store.handle(conns[i], &msg, &mut NoDomainControl);
        assert_eq!(out.reply.req_id, msg.req_id);
        assert!(out.reply.payload.len() <= PAYLOAD_MAX);
        for (_, ev) in &out.events {
            assert!(ev.payload.len() <= PAYLOAD_MAX);
            assert!(matches!(
                wire::classify_incoming(ev.clone()),
                Some(Incoming::WatchEvent { .. })
            ));
        }
    }
}

/// Client direction: decodes a byte stream as xenstored replies and runs every reply parser
/// the client uses over each payload.
pub fn replies(data: &[u8]) {
    let mut input = data;
    for _ in 0..MAX_MESSAGES {
        let msg: Message = match wire::read_message(&mut input) {
            Ok(Some(m)) => m,
            _ => break,
        };
        let payload = msg.payload.clone();
        let _ = wire::parse_string_list(&payload);
        let _ = wire::parse_directory_part(&payload);
        let _ = wire::parse_perm_list(&payload);
        if let Some(s) = wire::parse_single_string(&payload) {
            let _ = wire::parse_decimal(s.as_bytes());
        }
        if let Some(Incoming::WatchEvent { path, .. }) = wire::classify_incoming(msg) {
            let _ = wire::check_path(&path, true);
        }
    }
}
