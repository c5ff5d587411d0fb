//! A TCP proxy in front of one address, able to fail the way networks fail:
//! `cut` (every connection closed, new ones closed at once: what clients see
//! when a server or its host goes away) and `blackhole` (connections stay
//! open but nothing crosses, new ones get no answer: a partition, where
//! clients see no error, only silence), then `restore`.
//!
//! A connection closes as a whole: when either side closes, so does the
//! other (PostgreSQL's protocol never half-closes).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Cut,
    Blackhole,
}

#[derive(Debug, Clone, Copy)]
struct State {
    mode: Mode,
    /// Bumped by every `cut`, so that a connection notices a cut even if
    /// `restore` follows before it looks.
    cuts: u64,
}

/// A running proxy; it stops (closing every connection) when dropped.
pub struct Proxy {
    address: SocketAddr,
    state: watch::Sender<State>,
    stopped: CancellationToken,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`
    /// (`host:port`), passing everything through until told otherwise.
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let (state, _) = watch::channel(State {
            mode: Mode::Pass,
            cuts: 0,
        });
        let stopped = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            target.to_owned(),
            state.clone(),
            stopped.clone(),
        ));
        Proxy {
            address,
            state,
            stopped,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every open connection, and closes new ones as soon as they come.
    pub fn cut(&self) {
        self.state.send_modify(|state| {
            state.mode = Mode::Cut;
            state.cuts += 1;
        });
    }

    /// Forwards nothing in either direction and answers nothing: open
    /// connections stay open, silent; new ones are accepted but held silent.
    pub fn blackhole(&self) {
        self.state.send_modify(|state| state.mode = Mode::Blackhole);
    }

    /// Passes traffic again. What was held during a blackhole is delivered
    /// (a healed partition); connections closed by a cut stay closed.
    pub fn restore(&self) {
        self.state.send_modify(|state| state.mode = Mode::Pass);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    target: String,
    state: watch::Sender<State>,
    stopped: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
            () = stopped.cancelled() => return,
        };
        let target = target.clone();
        let state = state.subscribe();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = connection(client, &target, state) => {}
                () = stopped.cancelled() => {}
            }
        });
    }
}

/// Serves one client connection until either side closes it or a cut.
async fn connection(client: TcpStream, target: &str, mut state: watch::Receiver<State>) {
    let cuts = state.borrow().cuts;
    // A connection made during a partition waits, silent, for it to heal.
    let Ok(now) = state
        .wait_for(|s| s.mode != Mode::Blackhole)
        .await
        .map(|s| *s)
    else {
        return;
    };
    if now.mode == Mode::Cut || now.cuts != cuts {
        return; // dropping the socket closes it at once
    }
    let cuts = now.cuts;
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let mut watching = state.clone();
    tokio::select! {
        () = pipe(client_read, upstream_write, state.clone(), cuts) => {}
        () = pipe(upstream_read, client_write, state, cuts) => {}
        _ = watching.wait_for(|s| s.cuts != cuts) => {}
    }
}

/// Copies bytes from one side to the other, holding them while blackholed.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    cuts: u64,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(now) = state
            .wait_for(|s| s.mode != Mode::Blackhole)
            .await
            .map(|s| *s)
        else {
            return;
        };
        if now.cuts != cuts {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// The parts of a `postgres://` URL around its `host:port`: what comes
/// before it (scheme and user), the `host:port` itself (PostgreSQL's 5432 if
/// it names none), and what follows (database and options).
fn split_address(url: &str) -> (&str, String, &str) {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let host_start = url[authority_start..authority_end]
        .rfind('@')
        .map_or(authority_start, |i| authority_start + i + 1);
    let host_port = &url[host_start..authority_end];
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let address = if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    (&url[..host_start], address, &url[authority_end..])
}

/// The `host:port` a database URL points at.
pub fn database_address(url: &str) -> String {
    split_address(url).1
}

/// `url`, pointed at `address` instead.
pub fn via(url: &str, address: &str) -> String {
    let (before, _, after) = split_address(url);
    format!("{before}{address}{after}")
}
