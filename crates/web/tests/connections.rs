//! `smollm3_web::serve` on loopback: the cap on open connections, and idle connections
//! closed at the header deadline (so the cap is not held for ever).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use smollm3_web::{serve, ServeOptions};

/// Serves the scripted app with `options` on a runtime of its own; returns its address and
/// the runtime (dropping it stops the server).
fn start(options: ServeOptions) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = common::app(&[]);
    runtime.spawn(serve(listener, app, std::future::pending(), options));
    (address, runtime)
}

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// What arrives on `socket` within `wait`: the bytes, or `None` if nothing did.
fn read_within(socket: &mut TcpStream, wait: Duration) -> Option<String> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0; 4096];
    match socket.read(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("read: {e}"),
    }
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let (address, _runtime) = start(ServeOptions {
        max_connections: 2,
        ..ServeOptions::default()
    });
    // Two idle connections take the two places (taken in the order they came).
    let first = TcpStream::connect(&address).unwrap();
    let _second = TcpStream::connect(&address).unwrap();
    let mut third = TcpStream::connect(&address).unwrap();
    third.write_all(HEALTH.as_bytes()).unwrap();
    assert_eq!(
        read_within(&mut third, Duration::from_millis(500)),
        None,
        "a third connection was served while two were open"
    );
    drop(first);
    let answer = read_within(&mut third, Duration::from_secs(10)).expect("no answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn an_idle_keep_alive_connection_closes_at_the_header_deadline() {
    let (address, _runtime) = start(ServeOptions {
        header_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    });
    let mut socket = TcpStream::connect(&address).unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_within(&mut socket, Duration::from_secs(10)).expect("no answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Kept alive, then nothing more comes: the server closes it (end of stream).
    assert_eq!(
        read_within(&mut socket, Duration::from_secs(10)).as_deref(),
        Some("")
    );
}

#[test]
fn a_cap_past_what_a_semaphore_holds_still_serves() {
    // tokio's semaphore panics past 2^61 - 1 permits; `serve` must clamp, not die.
    let (address, _runtime) = start(ServeOptions {
        max_connections: usize::MAX,
        ..ServeOptions::default()
    });
    let mut socket = TcpStream::connect(&address).unwrap();
    socket.write_all(HEALTH.as_bytes()).unwrap();
    let answer = read_within(&mut socket, Duration::from_secs(10)).expect("no answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
