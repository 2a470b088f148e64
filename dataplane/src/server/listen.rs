//! Binding a listener, the one way every listener of the proxy and the operator is bound.
//!
//! `[::]:PORT` means every address of both families. The socket is made dual-stack
//! explicitly (`IPV6_V6ONLY` off, whatever the host's `net.ipv6.bindv6only`), so it accepts
//! IPv6 connections and IPv4 ones (as IPv4-mapped addresses): the kubelet's probes reach it on
//! IPv4-only, IPv6-only and dual-stack clusters alike. On a host without IPv6 (a kernel
//! booted with `ipv6.disable=1`, where an IPv6 socket cannot even be created) it falls back
//! to `0.0.0.0:PORT` and says so in the log. Any other address is bound exactly as given.
//!
//! Not guaranteed: a `[::]` listener on a host whose IPv6 is disabled per interface
//! (`disable_ipv6=1`) still binds, and serves IPv4.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues per listener (what tokio's own `bind` uses).
const BACKLOG: i32 = 1024;

/// Binds a TCP listener on `addr`; `[::]:PORT` is dual-stack (see the module doc).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if !(addr.is_ipv6() && addr.ip().is_unspecified()) {
        return TcpListener::bind(addr).await;
    }
    let socket = match Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(error = %e, %addr, fallback = %v4, "no IPv6 on this host: listening on IPv4 only");
            return TcpListener::bind(v4).await;
        }
    };
    TcpListener::from_std(dual_stack(socket, addr)?)
}

fn dual_stack(socket: Socket, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::bind;

    /// One byte through a connection from `to`'s family to the listener.
    async fn round_trip(listener: &TcpListener, to: SocketAddr) -> SocketAddr {
        let (client, accepted) = tokio::join!(TcpStream::connect(to), listener.accept());
        let (mut server, peer) = accepted.expect("accepted");
        let mut client = client.expect("connected");
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        peer
    }

    #[tokio::test]
    async fn the_unspecified_ipv6_address_serves_both_families() {
        let listener = bind("[::]:0".parse().unwrap()).await.expect("bind");
        let local = listener.local_addr().unwrap();
        assert!(
            local.is_ipv6(),
            "this host has IPv6 (::1 on lo), so no fallback: {local}"
        );
        let port = local.port();
        let v4 = round_trip(&listener, SocketAddr::from(([127, 0, 0, 1], port))).await;
        assert_eq!(
            v4.ip().to_canonical(),
            std::net::IpAddr::from([127, 0, 0, 1]),
            "an IPv4 client is accepted (as an IPv4-mapped address)"
        );
        let v6 = round_trip(&listener, SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await;
        assert_eq!(v6.ip(), std::net::IpAddr::from(Ipv6Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn other_addresses_are_bound_as_given() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
        let local = listener.local_addr().unwrap();
        assert_eq!(local.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        round_trip(&listener, local).await;
        let taken = bind(local).await.expect_err("the port is taken");
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    }
}
