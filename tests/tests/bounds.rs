//! What a client can hold of a real `weir serve`: connection slots per port,
//! how long a connection may take to send its opening bytes, and how long an
//! HTTP/1 client may take to send a request's headers or keep an idle
//! connection. Raw TCP on loopback, so that the test controls
//! every byte and every close.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_testbed::fleet::{PolicyFile, example_policy};
use weir_testbed::wait::eventually;
use weir_testbed::weir::{WasmDelivery, Weir};

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// How long an answer that must not come is waited for.
const NO_ANSWER: Duration = Duration::from_millis(800);

async fn weir(env: &[(&str, &str)]) -> (Weir, PolicyFile) {
    let policy = PolicyFile::new("policy.yaml", &example_policy()).unwrap();
    let weir = Weir::start_with_env(policy.path(), WasmDelivery::Local, env)
        .await
        .unwrap();
    (weir, policy)
}

/// Reads until `want` bytes arrived, the peer closed, or `deadline` passed.
async fn read_some(stream: &mut TcpStream, want: usize, deadline: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let reading = async {
        let mut buf = [0u8; 4096];
        while got.len() < want {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(deadline, reading).await.ok()?;
    Some(got)
}

/// Whether the peer closes the connection within `deadline` (reading and
/// dropping whatever it sends first).
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until_closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(deadline, until_closed).await.is_ok()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn the_admin_port_holds_its_connection_slots_and_serves_the_next_once_one_closes() {
    let (weir, _policy) = weir(&[
        ("WEIR_MAX_ADMIN_CONNECTIONS", "2"),
        ("WEIR_HEADER_TIMEOUT_MS", "60000"),
    ])
    .await;
    let admin = weir.admin_addr();
    // Two clients hold both slots (each proven served, so surely accepted).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = connect(admin).await;
        client.write_all(HEALTHZ).await.unwrap();
        let answer = read_some(&mut client, 12, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        held.push(client);
    }

    // A third connects (the kernel's backlog takes it) but is not served.
    let mut third = connect(admin).await;
    third.write_all(HEALTHZ).await.unwrap();
    assert_eq!(
        read_some(&mut third, 12, NO_ANSWER).await,
        None,
        "no answer while both slots are held"
    );

    // One closes: the third is served.
    drop(held.pop());
    let answer = read_some(&mut third, 12, Duration::from_secs(5)).await;
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with(b"HTTP/1.1 200")),
        "{answer:?}"
    );
    assert!(
        weir.log().contains("every connection slot is taken"),
        "{}",
        weir.log()
    );
}

#[tokio::test]
async fn the_xds_port_holds_its_connection_slots() {
    let (weir, _policy) = weir(&[("WEIR_MAX_XDS_CONNECTIONS", "1")]).await;
    let xds = weir.xds_addr();
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // An HTTP/2 server's first frame is its SETTINGS (frame type 4).
    let settings = |frame: &[u8]| frame.len() >= 9 && frame[3] == 4;

    let mut first = connect(xds).await;
    first.write_all(PREFACE).await.unwrap();
    let frame = read_some(&mut first, 9, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(settings(&frame), "{frame:?}");

    let mut second = connect(xds).await;
    second.write_all(PREFACE).await.unwrap();
    assert_eq!(read_some(&mut second, 9, NO_ANSWER).await, None);

    drop(first);
    let frame = read_some(&mut second, 9, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(settings(&frame), "{frame:?}");
}

#[tokio::test]
async fn an_http_client_slow_with_its_headers_or_idle_is_disconnected() {
    let (weir, _policy) = weir(&[("WEIR_HEADER_TIMEOUT_MS", "300")]).await;
    let admin = weir.admin_addr();

    // On either port: a connection that sends nothing, or only part of an
    // HTTP/2 preface (neither is timed by HTTP/2 or HTTP/1 themselves).
    for port in [admin, weir.xds_addr()] {
        let mut silent = connect(port).await;
        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "{port}"
        );
        let mut partial = connect(port).await;
        partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(
            closed_within(&mut partial, Duration::from_secs(5)).await,
            "{port}"
        );
    }

    // Half a request, and nothing more.
    let mut slow = connect(admin).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);

    // A whole request, then silence on the kept-alive connection.
    let mut idle = connect(admin).await;
    idle.write_all(HEALTHZ).await.unwrap();
    let answer = read_some(&mut idle, 12, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);

    // weir serves on.
    let status = eventually("weir to answer", Duration::from_secs(5), || async {
        weir.status().await.ok()
    })
    .await
    .unwrap();
    assert!(status.is_object());
}
