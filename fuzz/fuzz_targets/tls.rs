//! ClientHellos as the kernel copies them, on arbitrary bytes, both as a TCP payload
//! (`tls::server_name`) and as a packet from its IP header on (`tls::parse`): a valid
//! host name that a ClientHello built for it gives back, or a counted reason; never a
//! panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::tls;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(name)) = tls::server_name(data) {
        check_name(&name);
    }
    if let Ok(hello) = tls::parse(data)
        && let Some(name) = hello.name
    {
        check_name(&name);
    }
});

/// A host name as DNS spells it, lower case, no final dot; read back from a ClientHello
/// that names it.
fn check_name(name: &str) {
    assert!(!name.is_empty() && name.len() <= 253, "length of {name:?}");
    assert!(!name.ends_with('.'), "final dot in {name:?}");
    assert!(
        name.split('.').all(|label| !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')),
        "not a host name: {name:?}"
    );
    assert_eq!(
        tls::server_name(&tls::client_hello(Some(name), 0)),
        Ok(Some(name.to_owned())),
        "round trip"
    );
}
