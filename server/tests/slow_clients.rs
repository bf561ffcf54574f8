//! Slow and idle clients cannot hold the server: a real socket, the shipped package, in process.
//! Every wait below is bounded by a generous guard that only a hung server reaches.

use std::net::SocketAddr;
use std::time::Duration;

mod common;

use common::shipped;
use ofa_server::{ServeConfig, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GUARD: Duration = Duration::from_secs(120);

/// A running server; it stops when dropped.
struct Running {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(cfg: ServeConfig) -> Running {
    let cfg = ServeConfig {
        packages: vec![shipped()],
        addr: ([127, 0, 0, 1], 0).into(),
        threads: 1,
        ..cfg
    };
    let server = Server::bind(cfg).await.expect("the shipped package serves");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

/// Everything the server sends until it closes the connection.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(GUARD, s.read_to_end(&mut all))
        .await
        .expect("the server never closed the connection")
        .ok();
    String::from_utf8_lossy(&all).into_owned()
}

/// One `GET /healthz` on a new connection, answered.
async fn healthz(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    until_closed(&mut s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_or_idles_is_cut_off() {
    let server = start(ServeConfig {
        header_timeout: Duration::from_millis(500),
        ..ServeConfig::default()
    })
    .await;
    // half a request head, never finished
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    // others are served meanwhile
    assert!(healthz(server.addr).await.starts_with("HTTP/1.1 200"));
    // and the slow one is closed (before: it stayed open for good)
    let answer = until_closed(&mut slow).await;
    assert!(!answer.contains(" 200 "), "{answer}");

    // a kept-alive connection that goes quiet after its request is closed too
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_is_a_408() {
    let server = start(ServeConfig {
        body_timeout: Duration::from_millis(500),
        ..ServeConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(
        b"POST /v1/subnets HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{\"supernet\"",
    )
    .await
    .expect("write");
    let answer = until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let server = start(ServeConfig {
        max_connections: 1,
        header_timeout: Duration::from_secs(600),
        ..ServeConfig::default()
    })
    .await;
    // the one slot: a connection that says nothing (accepted: it is served, waiting for its head)
    let first = TcpStream::connect(server.addr).await.expect("connect");
    let mut second = TcpStream::connect(server.addr).await.expect("connect");
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    // not served while the first holds the slot (a correct server never answers here: this wait
    // can only miss a bug, never fail a correct server)
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
    assert!(early.is_err(), "answered past the connection cap");
    // the first leaves; the second is served
    drop(first);
    let answer = until_closed(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_download_is_cut_off() {
    // one slot: the second connection is served only once the server has let the first go
    let server = start(ServeConfig {
        max_connections: 1,
        header_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(600),
        ..ServeConfig::default()
    })
    .await;
    let app_arch = ofa_space::ArchConfig::largest(&common::shipped_space());
    // the largest subnet's weights (megabytes), asked for on a connection with a small receive
    // buffer that is then never read
    let id = {
        let body = serde_json::json!({"supernet": "fashion-mnist", "arch": app_arch}).to_string();
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(
            format!(
                "POST /v1/subnets HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let answer = until_closed(&mut s).await;
        let json = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
        let rec: serde_json::Value = serde_json::from_str(json).expect("a record");
        rec["id"].as_str().expect("an id").to_string()
    };
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small buffer");
    let mut stalled = socket.connect(server.addr).await.expect("connect");
    stalled
        .write_all(format!("GET /v1/subnets/{id}/weights HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .expect("write");
    // served once the stalled download has been cut off (before: never)
    assert!(healthz(server.addr).await.starts_with("HTTP/1.1 200"));
    let got = until_closed(&mut stalled).await;
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "{}",
        &got[..got.len().min(200)]
    );
}
