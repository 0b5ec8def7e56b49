//! TLS ClientHellos from the kernel: the server name (SNI) and the address it was sent to.
//!
//! The kernel copies a packet to TCP port 443 whose payload starts a handshake record
//! holding a ClientHello, from its IP header on and cut at `HELLO_COPY` bytes. etherparse
//! reads the IP and TCP headers (laxly: a cut packet keeps what is there), tls-parser the
//! handshake and its extensions. A ClientHello longer than the copy still gives its name
//! when the name comes before the cut, as the extensions are read one by one.

use std::net::IpAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use tls_parser::{
    SNIType, TlsExtension, parse_tls_client_hello_extensions, parse_tls_handshake_client_hello,
};

/// The TLS record header and the handshake header before the ClientHello body.
const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;

/// What a ClientHello says, and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The destination address of the packet: the server.
    pub server: IpAddr,
    /// The server name, lower case, without a trailing dot; `None` when the ClientHello
    /// names no server (or its name lies past the cut).
    pub name: Option<String>,
}

/// Why a copied packet gave no ClientHello; bounded, exported as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
    #[error("not a TCP segment with a whole header")]
    NotTcp,
    #[error("the payload is not a TLS ClientHello")]
    NotClientHello,
    #[error("the server name is not a valid host name")]
    BadServerName,
}

impl Malformed {
    pub const ALL: [Malformed; 4] = [
        Malformed::NotIp,
        Malformed::NotTcp,
        Malformed::NotClientHello,
        Malformed::BadServerName,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Malformed::NotIp => "not_ip",
            Malformed::NotTcp => "not_tcp",
            Malformed::NotClientHello => "not_client_hello",
            Malformed::BadServerName => "bad_server_name",
        }
    }
}

/// Reads the server address and the server name of a ClientHello packet as the kernel
/// copied it (IP header first).
pub fn parse(packet: &[u8]) -> Result<Hello, Malformed> {
    let sliced = LaxSlicedPacket::from_ip(packet).map_err(|_| Malformed::NotIp)?;
    let server = match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => IpAddr::V4(ip.header().destination_addr()),
        Some(LaxNetSlice::Ipv6(ip)) => IpAddr::V6(ip.header().destination_addr()),
        _ => return Err(Malformed::NotIp),
    };
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return Err(Malformed::NotTcp);
    };
    let name = server_name(tcp.payload())?;
    Ok(Hello { server, name })
}

/// The server name of the ClientHello that `payload` (a TCP payload) starts with.
pub fn server_name(payload: &[u8]) -> Result<Option<String>, Malformed> {
    // The kernel checked these bytes; a replayed or mutated copy may not hold them.
    let (Some(&22), Some(&3), Some(&1)) = (payload.first(), payload.get(1), payload.get(5)) else {
        return Err(Malformed::NotClientHello);
    };
    let body = payload
        .get(RECORD_HEADER + HANDSHAKE_HEADER..)
        .ok_or(Malformed::NotClientHello)?;
    let (rest, hello) =
        parse_tls_handshake_client_hello(body).map_err(|_| Malformed::NotClientHello)?;
    // A whole extension block, or (a cut packet) its length and what follows of it.
    let extensions = match hello.ext {
        Some(ext) => ext,
        None => rest.get(2..).unwrap_or_default(),
    };
    // Extensions are read one by one, so a cut one ends the list and the earlier count.
    let (_, extensions) =
        parse_tls_client_hello_extensions(extensions).map_err(|_| Malformed::NotClientHello)?;
    for ext in extensions {
        if let TlsExtension::SNI(names) = ext {
            for (kind, name) in names {
                if kind == SNIType::HostName {
                    return host_name(name).map(Some);
                }
            }
        }
    }
    Ok(None)
}

/// A host name as DNS spells it (RFC 6066: ASCII, no trailing dot), lower-cased.
fn host_name(raw: &[u8]) -> Result<String, Malformed> {
    let name = std::str::from_utf8(raw).map_err(|_| Malformed::BadServerName)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(Malformed::BadServerName)
    }
}

/// Test support: a ClientHello record as TLS clients send them, naming `name` (none when
/// `None`), with `padding` bytes of an unknown extension before the server name.
#[doc(hidden)]
#[must_use]
pub fn client_hello(name: Option<&str>, padding: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    if padding > 0 {
        // The padding extension (21), as clients use it to round the hello up.
        ext.extend_from_slice(&21u16.to_be_bytes());
        ext.extend_from_slice(&u16::try_from(padding).expect("small").to_be_bytes());
        ext.resize(ext.len() + padding, 0);
    }
    if let Some(name) = name {
        let n = u16::try_from(name.len()).expect("a host name");
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(n + 5).to_be_bytes());
        ext.extend_from_slice(&(n + 3).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&n.to_be_bytes());
        ext.extend_from_slice(name.as_bytes());
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&u16::try_from(ext.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&u16::try_from(hs.len()).expect("small").to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_server_name_is_read_lower_case() {
        let hello = client_hello(Some("Upload.Shady.Example."), 0);
        assert_eq!(
            server_name(&hello),
            Ok(Some("upload.shady.example".to_owned()))
        );
        assert_eq!(server_name(&client_hello(None, 40)), Ok(None));
    }

    #[test]
    fn a_cut_hello_gives_the_name_before_the_cut_and_none_after() {
        let early = client_hello(Some("api.example.com"), 0);
        let mut cut = early.clone();
        cut.extend_from_slice(&[0; 600]);
        // A record header that claims more than the copy holds (the kernel cut it).
        let claimed = u16::try_from(early.len() + 600 - RECORD_HEADER).expect("small");
        cut[3..5].copy_from_slice(&claimed.to_be_bytes());
        cut.truncate(early.len() + 10);
        assert_eq!(server_name(&cut), Ok(Some("api.example.com".to_owned())));
        // The name after 1,500 bytes of padding: cut at 1,000, it is lost, not misread.
        let late = client_hello(Some("api.example.com"), 1500);
        assert_eq!(server_name(&late[..1000]), Ok(None));
        assert_eq!(server_name(&late), Ok(Some("api.example.com".to_owned())));
        // A name cut in its middle is not a shorter name.
        let n = late.len();
        assert_eq!(server_name(&late[..n - 4]), Ok(None));
    }

    #[test]
    fn bogus_hellos_are_refused_by_reason() {
        assert_eq!(server_name(b""), Err(Malformed::NotClientHello));
        assert_eq!(
            server_name(b"GET / HTTP/1.1\r\n"),
            Err(Malformed::NotClientHello)
        );
        let mut hello = client_hello(Some("a.example"), 0);
        hello[RECORD_HEADER + HANDSHAKE_HEADER + 34] = 200; // a session id longer than 32
        assert_eq!(server_name(&hello), Err(Malformed::NotClientHello));
        let bad = client_hello(Some("a b.example"), 0);
        assert_eq!(server_name(&bad), Err(Malformed::BadServerName));
        assert_eq!(parse(&[0x45, 0, 0]), Err(Malformed::NotIp));
    }

    #[test]
    fn the_server_is_the_packets_destination_in_either_family() {
        let hello = client_hello(Some("a.example"), 0);
        let mut v4 = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 10], [203, 0, 113, 70], 64)
            .tcp(40000, 443, 1, 1024)
            .write(&mut v4, &hello)
            .expect("builds");
        let want = |server: &str| Hello {
            server: server.parse().expect("address"),
            name: Some("a.example".to_owned()),
        };
        assert_eq!(parse(&v4), Ok(want("203.0.113.70")));
        let mut v6 = Vec::new();
        etherparse::PacketBuilder::ipv6(
            "2001:db8:1::10"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets(),
            "2001:db8:ff::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets(),
            64,
        )
        .tcp(40000, 443, 1, 1024)
        .write(&mut v6, &hello)
        .expect("builds");
        assert_eq!(parse(&v6), Ok(want("2001:db8:ff::1")));
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 10], [203, 0, 113, 70], 64)
            .udp(40000, 443)
            .write(&mut udp, &hello)
            .expect("builds");
        assert_eq!(parse(&udp), Err(Malformed::NotTcp));
    }

    proptest! {
        /// Any bytes, and any cut or mutation of a real hello: an answer, never a panic.
        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = parse(&bytes);
            let _ = server_name(&bytes);
        }

        #[test]
        fn cut_or_mutated_hellos_never_panic(cut in 0usize..400, at in 0usize..400, b: u8) {
            let mut hello = client_hello(Some("x.example.org"), 100);
            if let Some(byte) = hello.get_mut(at) {
                *byte = b;
            }
            hello.truncate(cut.min(hello.len()));
            let _ = server_name(&hello);
        }
    }
}
