//! PROXY protocol version 2 (HAProxy's binary header): with `proxy_protocol = true` every
//! connection must start with one, and the client address it names is the one the gateway
//! uses (per-address connection cap, handshake rate limit, logs). Parsing is the `ppp`
//! crate's; this module reads exactly one header, bounded in size and time.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest header accepted: the fixed part (16 bytes) and addresses with TLVs up to this.
pub const MAX_HEADER_LEN: usize = 16 + 512;

/// Why a connection was closed before its PROXY header was read.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// The connection did not start with the v2 signature (no header, or version 1 text).
    Missing,
    /// The signature was there, but not a valid v2 header.
    Invalid,
    /// A header longer than [`MAX_HEADER_LEN`].
    TooLong,
    /// Closed, or not all of it within the time allowed.
    Incomplete,
}

impl std::fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Missing => "no PROXY v2 header",
            Self::Invalid => "invalid PROXY v2 header",
            Self::TooLong => "PROXY v2 header too long",
            Self::Incomplete => "PROXY v2 header incomplete",
        })
    }
}

/// Reads the header that starts `tcp` within `timeout` and returns the client's address:
/// the source of a `PROXY` command over TCP/IPv4 or IPv6, or `peer` (the proxy itself) for a
/// `LOCAL` command (the proxy's own health checks) and for unspecified or Unix addresses.
///
/// # Errors
/// See [`ProxyHeaderError`]; the caller closes the connection.
pub async fn read_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, ProxyHeaderError> {
    tokio::time::timeout(timeout, read(tcp, peer))
        .await
        .map_err(|_| ProxyHeaderError::Incomplete)?
}

async fn read(tcp: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head)
        .await
        .map_err(|_| ProxyHeaderError::Incomplete)?;
    if head[..PROTOCOL_PREFIX.len()] != *PROTOCOL_PREFIX {
        return Err(ProxyHeaderError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if 16 + len > MAX_HEADER_LEN {
        return Err(ProxyHeaderError::TooLong);
    }
    let mut buf = Vec::with_capacity(16 + len);
    buf.extend_from_slice(&head);
    buf.resize(16 + len, 0);
    tcp.read_exact(&mut buf[16..])
        .await
        .map_err(|_| ProxyHeaderError::Incomplete)?;
    client_address(&buf, peer)
}

/// The client address in a complete header (`buf` is exactly the header).
pub(crate) fn client_address(buf: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    let h = Header::try_from(buf).map_err(|_| ProxyHeaderError::Invalid)?;
    if h.command == Command::Local {
        return Ok(peer);
    }
    Ok(match h.addresses {
        Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Protocol, Version};

    fn header(cmd: Command, src: &str) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = if src.is_ipv4() {
            "192.0.2.1:443".parse().unwrap()
        } else {
            "[2001:db8::1]:443".parse().unwrap()
        };
        Builder::with_addresses(Version::Two | cmd, Protocol::Stream, (src, dst))
            .build()
            .unwrap()
    }

    #[test]
    fn addresses_come_from_the_header() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let h = header(Command::Proxy, "203.0.113.7:40000");
        assert_eq!(
            client_address(&h, peer).unwrap(),
            "203.0.113.7:40000".parse().unwrap()
        );
        let h6 = header(Command::Proxy, "[2001:db8:5::7]:1");
        assert_eq!(
            client_address(&h6, peer).unwrap(),
            "[2001:db8:5::7]:1".parse().unwrap()
        );
        let local = header(Command::Local, "203.0.113.7:40000");
        assert_eq!(client_address(&local, peer).unwrap(), peer);
        let mut bad = h;
        bad[12] = 0x11; // version 1 in the binary form
        assert_eq!(client_address(&bad, peer), Err(ProxyHeaderError::Invalid));
    }
}
