//! Ring buffer records, on arbitrary bytes: `events::decode_record` and `events::decode`
//! give copies within the record and its copy limit, flow events that encode back to the
//! same bytes, or an error; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::events::{self, EventKind, Record};
use monitor_common::{
    flow::{EVENT_FLOW_END, EVENT_FLOW_START, EVENT_FLOW_UPDATE, FlowEvent},
    watch::{DNS_COPY, HELLO_COPY},
};

fuzz_target!(|data: &[u8]| {
    match events::decode_record(data) {
        Ok(Record::Dns { payload, .. }) => {
            assert!(payload.len() <= DNS_COPY);
            assert!(within(payload, data));
        }
        Ok(Record::Hello { packet, .. }) => {
            assert!(packet.len() <= HELLO_COPY);
            assert!(within(packet, data));
        }
        Ok(Record::Flow(kind, key, state)) => {
            assert_eq!(events::decode(data).ok(), Some((kind, key, state)));
        }
        Err(_) => {}
    }
    if let Ok((kind, key, state)) = events::decode(data) {
        let event = FlowEvent {
            kind: match kind {
                EventKind::FlowStart => EVENT_FLOW_START,
                EventKind::FlowUpdate => EVENT_FLOW_UPDATE,
                EventKind::FlowEnd => EVENT_FLOW_END,
                EventKind::FlowIdle => panic!("the kernel sends no idle event"),
            },
            _pad: u32::from_ne_bytes(data[4..8].try_into().expect("4 bytes")),
            key,
            state,
        };
        // SAFETY: FlowEvent is `#[repr(C)]` integers and byte arrays without implicit
        // padding (its size is asserted in monitor-common), so every byte is initialised.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<FlowEvent>())
        };
        assert_eq!(bytes, data, "a flow event encodes back to its record");
    }
});

/// Whether `part` lies inside `whole`.
fn within(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr_range(), whole.as_ptr_range());
    w.start <= p.start && p.end <= w.end
}
