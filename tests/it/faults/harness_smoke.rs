//! The fault harness on its own, so that a bug in it shows up as such and
//! not as a fault of taskrunner's: the private cluster starts, stops and
//! restarts; the proxy passes, cuts, blackholes and restores.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cluster::PrivateCluster;
use crate::proxy::Proxy;

/// Generous: the machine is shared and busy.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long silence is listened for to call it silence.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn the_private_cluster_starts_stops_and_restarts() {
    let cluster = PrivateCluster::start().await;
    let client = cluster.client("postgres").await.expect("connect");
    client
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        .await
        .expect("write");

    cluster.restart().await;
    assert!(
        client.batch_execute("SELECT 1").await.is_err(),
        "a session from before the restart is gone"
    );
    let client = cluster.client("postgres").await.expect("reconnect");
    let kept: i32 = client
        .query_one("SELECT n FROM kept", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(kept, 42, "data survives a restart");

    cluster.stop().await;
    assert!(
        cluster.client("postgres").await.is_err(),
        "nothing answers while stopped"
    );
    cluster.start_again().await;
    cluster.client("postgres").await.expect("connect again");
}

#[tokio::test]
async fn the_proxy_passes_cuts_blackholes_and_restores() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&echo).await;

    let mut before_cut = TcpStream::connect(proxy.address()).await.unwrap();
    assert_eq!(round_trip(&mut before_cut, b"ping").await, b"ping");

    proxy.cut();
    assert_closed(&mut before_cut, "an open connection is closed by a cut").await;
    let mut during_cut = TcpStream::connect(proxy.address()).await.unwrap();
    let _ = during_cut.write_all(b"hello").await;
    assert_closed(&mut during_cut, "a new connection is closed at once").await;

    proxy.restore();
    let mut open = TcpStream::connect(proxy.address()).await.unwrap();
    assert_eq!(round_trip(&mut open, b"again").await, b"again");

    proxy.blackhole();
    open.write_all(b"held").await.unwrap();
    assert_silent(&mut open, "nothing crosses an open connection").await;
    let mut during_blackhole = TcpStream::connect(proxy.address()).await.unwrap();
    during_blackhole.write_all(b"late").await.unwrap();
    assert_silent(&mut during_blackhole, "a new connection is held silent").await;

    proxy.restore();
    assert_eq!(
        read_exactly(&mut open, 4).await,
        b"held",
        "what was held is delivered"
    );
    assert_eq!(
        read_exactly(&mut during_blackhole, 4).await,
        b"late",
        "a held connection goes through"
    );
    assert_eq!(round_trip(&mut open, b"more").await, b"more");
}

/// A server that sends back whatever it receives; returns its address.
async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    read_exactly(stream, message.len()).await
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buffer = vec![0; n];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buffer))
        .await
        .expect("an answer within the deadline")
        .expect("read");
    buffer
}

async fn assert_closed(stream: &mut TcpStream, what: &str) {
    let mut buffer = [0; 16];
    match tokio::time::timeout(DEADLINE, stream.read(&mut buffer)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: read {n} bytes instead"),
        Err(_) => panic!("{what}: still open after {DEADLINE:?}"),
    }
}

async fn assert_silent(stream: &mut TcpStream, what: &str) {
    let mut buffer = [0; 16];
    match tokio::time::timeout(QUIET, stream.read(&mut buffer)).await {
        Err(_) => {}
        Ok(result) => panic!("{what}: got {result:?} within {QUIET:?}"),
    }
}
