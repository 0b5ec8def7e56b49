//! DNS answers as the kernel copies them, on arbitrary bytes: `dns::parse_message` gives
//! the same over UDP and over TCP with a length prefix, names as the watchlists compare
//! them (lower case, no final dot, each once), or a counted reason; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::dns;

fuzz_target!(|data: &[u8]| {
    let udp = dns::parse_message(data, false);
    assert_eq!(
        dns::parse(data, false),
        udp.clone().map(|p| p.resolved),
        "parse is parse_message's addresses"
    );
    if let Ok(len) = u16::try_from(data.len()) {
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(data);
        assert_eq!(dns::parse_message(&framed, true), udp, "TCP reads as UDP");
        // Cut inside the message: the length prefix no longer fits.
        if !data.is_empty() {
            assert_eq!(
                dns::parse_message(&framed[..framed.len() - 1], true),
                Err(dns::Malformed::TcpFraming)
            );
        }
    }
    let Ok(parsed) = udp else { return };
    for r in &parsed.resolved {
        assert!(!r.names.is_empty(), "an address has at least its owner");
        for (i, name) in r.names.iter().enumerate() {
            check_name(name);
            assert!(!r.names[..i].contains(name), "{name} listed twice");
        }
    }
    if let Some(q) = &parsed.question {
        check_name(q);
    }
});

fn check_name(name: &str) {
    assert!(!name.ends_with('.'), "final dot in {name:?}");
    assert!(
        !name.bytes().any(|b| b.is_ascii_uppercase()),
        "upper case in {name:?}"
    );
}
