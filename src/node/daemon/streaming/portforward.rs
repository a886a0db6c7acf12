//! `kubectl port-forward` on the node: the kubelet's `/portForward/NS/POD`, which the API
//! server passes its client's connection on to, byte for byte.
//!
//! kubectl 1.32 asks for a WebSocket first, with the sub-protocol
//! `SPDY/3.1+portforward.k8s.io` (KEP-4006: SPDY carried in binary messages), and falls
//! back to an HTTP/1.1 `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version:
//! portforward.k8s.io`. Both end in the same SPDY/3.1 session here ([`serve`]). Kubernetes'
//! API server unwraps the WebSocket and speaks SPDY to the kubelet; ours stays a tunnel
//! (one way to the node for exec, attach and port-forward, nothing of the protocol in the
//! server) and the node takes either form.
//!
//! In the session, each local connection kubectl accepts opens two streams with the same
//! `requestid`: `streamtype: error`, then `streamtype: data`, both with `port`. Once both
//! are there the node connects to `localhost:PORT` inside the pod's network namespace (a
//! short-lived thread joins it, makes the socket and hands it to tokio; the socket stays
//! in the pod's namespace) and copies bytes both ways: the client's half-close shuts the
//! pod connection's writing side, the pod's end of output ends the data stream. A port
//! that cannot be reached is a message on the error stream in the kubelet's words, which
//! kubectl prints before it gives up the connection. Pings are answered; a frame that
//! cannot be read ends the session with GOAWAY.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::spdy::{self, Decoder, Encoder, FIN, Frame};
use super::{Daemon, StreamError};

/// The sub-protocol of the WebSocket form.
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// `X-Stream-Protocol-Version` of the plain SPDY form.
pub const PROTOCOL: &str = "portforward.k8s.io";
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// How long the two streams of one request may be apart (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the pod (or the tunnel) at a time: one data frame at most.
const CHUNK: usize = 32 * 1024;
/// A data stream's bytes queued for its pod connection before the session waits.
const INBOUND_QUEUE: usize = 16;

/// The pod whose ports are reached.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub uid: String,
    /// The pod's network namespace; None: the host's (hostNetwork).
    pub netns: Option<PathBuf>,
}

/// Pod NS/NAME, if this node runs it.
pub fn target_of(d: &Daemon, ns: &str, name: &str) -> Result<Target, StreamError> {
    let entry = d.get(ns, name).ok_or_else(|| StreamError::NoPod(name.into()))?;
    let host_network = entry.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let dir = crate::node::pod_state::pod_dir(&d.opts.root, &entry.uid);
    Ok(Target { name: name.to_string(), uid: entry.uid.clone(), netns: (!host_network).then(|| dir.join("ns/net")) })
}

/// Answers the WebSocket form: the binary messages carry the SPDY session's bytes.
pub fn websocket(ws: WebSocketUpgrade, target: Target) -> axum::response::Response {
    ws.protocols([WEBSOCKET_PROTOCOL]).on_upgrade(move |socket| async move {
        let (ours, session) = tokio::io::duplex(2 * CHUNK);
        tokio::spawn(serve(session, target));
        tunnel(socket, ours).await;
    })
}

/// Joins the WebSocket to the session's end of the pipe, each direction on its own (one
/// direction waiting never holds the other up).
async fn tunnel(socket: WebSocket, pipe: tokio::io::DuplexStream) {
    let (mut to_client, mut from_client) = socket.split();
    let (mut from_session, mut to_session) = tokio::io::split(pipe);
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_session.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.send(WsMessage::Binary(buf[..n].to_vec().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
        // kubectl takes any close but a normal one as a broken connection.
        let close = axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() };
        let _ = to_client.send(WsMessage::Close(Some(close))).await;
    });
    tokio::pin!(down);
    loop {
        tokio::select! {
            _ = &mut down => break,
            m = from_client.next() => match m {
                Some(Ok(WsMessage::Binary(data))) => {
                    if to_session.write_all(&data).await.is_err() {
                        break;
                    }
                }
                // Text is no part of the protocol; pings are answered by the library.
                Some(Ok(WsMessage::Text(_) | WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => {
                    let _ = to_session.shutdown().await;
                    // The session ends, its side of the pipe closes, and `down` with it.
                    let _ = (&mut down).await;
                    break;
                }
            },
        }
    }
}

/// One SPDY/3.1 session on `io` (the upgraded connection, or the WebSocket's pipe), until
/// the client closes it or sends what cannot be read.
pub async fn serve<S>(io: S, target: Target)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(write_frames(wr, out_rx));
    let (done, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut session = Session {
        target,
        out,
        done,
        last_stream: 0,
        going_away: false,
        streams: HashMap::new(),
        pairs: HashMap::new(),
    };
    let mut decoder = Decoder::new();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut chunk = vec![0u8; CHUNK];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    'session: loop {
        let mut used = 0;
        loop {
            match decoder.decode(&buf[used..]) {
                Ok(Some((frame, n))) => {
                    used += n;
                    session.on_frame(frame).await;
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(pod = session.target.name, %err, "port-forward: a frame that cannot be read");
                    let last_good = session.last_stream;
                    let _ = session.out.send(Frame::GoAway { last_good, status: spdy::GOAWAY_PROTOCOL_ERROR }).await;
                    break 'session;
                }
            }
        }
        buf.drain(..used);
        tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            Some(request) = done_rx.recv() => session.finished(&request),
            _ = tick.tick() => session.expire().await,
        }
    }
    // Ends the forwards still running (their cancel senders go), then the writer.
    drop(session);
    let _ = writer.await;
}

async fn write_frames<W: AsyncWrite>(wr: W, mut frames: mpsc::Receiver<Frame>) {
    tokio::pin!(wr);
    let mut encoder = Encoder::new();
    let mut bytes = Vec::with_capacity(CHUNK + 64);
    while let Some(frame) = frames.recv().await {
        bytes.clear();
        let mut next = Some(frame);
        // What is queued goes out in one write.
        while let Some(f) = next {
            if let Err(err) = encoder.encode(&f, &mut bytes) {
                tracing::warn!(%err, "port-forward: a frame could not be written");
            }
            next = if bytes.len() < CHUNK { frames.try_recv().ok() } else { None };
        }
        if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Error,
    Data,
}

/// The two streams of one forwarded connection.
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    /// The data stream's port (the kubelet forwards to that one).
    port: u16,
    since: Instant,
    started: bool,
    /// The data stream's bytes, to the pod connection; None once the client's half ended.
    inbound: Option<mpsc::Sender<Vec<u8>>>,
    inbound_rx: Option<mpsc::Receiver<Vec<u8>>>,
    /// Dropped or fired: the forward stops (the data stream was reset, the session ended).
    cancel: Option<oneshot::Sender<()>>,
}

struct Session {
    target: Target,
    out: mpsc::Sender<Frame>,
    done: mpsc::UnboundedSender<String>,
    last_stream: u32,
    going_away: bool,
    /// Stream id to its request and kind.
    streams: HashMap<u32, (String, Kind)>,
    pairs: HashMap<String, Pair>,
}

impl Session {
    async fn send(&self, frame: Frame) {
        let _ = self.out.send(frame).await;
    }

    async fn reset(&self, stream: u32, status: u32) {
        self.send(Frame::RstStream { stream, status }).await;
    }

    async fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::SynStream { stream, flags, headers, .. } => self.on_new_stream(stream, flags, &headers).await,
            Frame::Data { stream, flags, data } => self.on_data(stream, flags, data).await,
            Frame::RstStream { stream, .. } => self.on_reset(stream),
            // Ours are even (we send none); the client's are echoed.
            Frame::Ping { id } if !id.is_multiple_of(2) => self.send(Frame::Ping { id }).await,
            Frame::GoAway { .. } => self.going_away = true,
            // No flow control here (spdystream has none either); nothing else is asked of us.
            Frame::Ping { .. }
            | Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }

    async fn on_new_stream(&mut self, stream: u32, flags: u8, headers: &spdy::Headers) {
        // A client's streams are odd and each newer than the last.
        if stream.is_multiple_of(2) || stream <= self.last_stream {
            return self.reset(stream, spdy::PROTOCOL_ERROR).await;
        }
        self.last_stream = stream;
        if self.going_away {
            return self.reset(stream, spdy::REFUSED_STREAM).await;
        }
        let checked = check_stream(headers);
        let (kind, port) = match checked {
            Ok(k) => k,
            Err(why) => {
                tracing::debug!(pod = self.target.name, stream, why, "port-forward: stream refused");
                return self.reset(stream, spdy::CANCEL).await;
            }
        };
        let request = match spdy::header(headers, "requestid").filter(|r| !r.is_empty()) {
            Some(r) => r.to_string(),
            // Clients older than request ids: the error stream's id names the pair, and the
            // data stream follows it (the kubelet's guess too).
            None => match kind {
                Kind::Error => stream.to_string(),
                Kind::Data => stream.saturating_sub(2).to_string(),
            },
        };
        let pair = self.pairs.entry(request.clone()).or_insert_with(|| Pair {
            error: None,
            data: None,
            port,
            since: Instant::now(),
            started: false,
            inbound: None,
            inbound_rx: None,
            cancel: None,
        });
        let slot = match kind {
            Kind::Error => &mut pair.error,
            Kind::Data => &mut pair.data,
        };
        if slot.is_some() {
            let which = if kind == Kind::Error { "error" } else { "data" };
            let message = format!("error processing stream for request {request}: {which} stream already assigned");
            let error_stream = pair.error;
            if let Some(e) = error_stream {
                self.send(Frame::Data { stream: e, flags: 0, data: message.into_bytes() }).await;
            }
            return self.reset(stream, spdy::PROTOCOL_ERROR).await;
        }
        *slot = Some(stream);
        if kind == Kind::Data {
            pair.port = port;
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            // A data stream whose client half is done already has nothing to send.
            pair.inbound = (flags & FIN == 0).then_some(tx);
            pair.inbound_rx = Some(rx);
        }
        self.streams.insert(stream, (request.clone(), kind));
        self.send(Frame::SynReply { stream, flags: 0, headers: vec![] }).await;
        self.start_if_complete(&request);
    }

    fn start_if_complete(&mut self, request: &str) {
        let Some(pair) = self.pairs.get_mut(request) else { return };
        let (Some(error), Some(data), false) = (pair.error, pair.data, pair.started) else { return };
        let Some(inbound) = pair.inbound_rx.take() else { return };
        pair.started = true;
        let (cancel_tx, cancel) = oneshot::channel();
        pair.cancel = Some(cancel_tx);
        let forward = Forward { target: self.target.clone(), port: pair.port, error, data, out: self.out.clone() };
        let (done, request) = (self.done.clone(), request.to_string());
        tokio::spawn(async move {
            forward.run(inbound, cancel).await;
            let _ = done.send(request);
        });
    }

    async fn on_data(&mut self, stream: u32, flags: u8, data: Vec<u8>) {
        let Some((request, Kind::Data)) = self.streams.get(&stream).cloned() else {
            // The error stream carries nothing from the client; unknown streams are gone.
            return;
        };
        let Some(pair) = self.pairs.get_mut(&request) else { return };
        if let Some(tx) = &pair.inbound
            && !data.is_empty()
        {
            if pair.started {
                // The pod reads slowly: the session waits for it, as spdystream does.
                if tx.send(data).await.is_err() {
                    pair.inbound = None;
                }
            } else if tx.try_send(data).is_err() {
                // More than a queue's worth before the error stream came: refused.
                pair.inbound = None;
                return self.reset(stream, spdy::CANCEL).await;
            }
        }
        if flags & FIN != 0
            && let Some(pair) = self.pairs.get_mut(&request)
        {
            pair.inbound = None;
        }
    }

    fn on_reset(&mut self, stream: u32) {
        let Some((request, kind)) = self.streams.remove(&stream) else { return };
        if kind == Kind::Data
            && let Some(pair) = self.pairs.get_mut(&request)
        {
            pair.inbound = None;
            if let Some(cancel) = pair.cancel.take() {
                let _ = cancel.send(());
            }
        }
    }

    /// A forward ended: its streams are forgotten.
    fn finished(&mut self, request: &str) {
        if let Some(pair) = self.pairs.remove(request) {
            for s in [pair.error, pair.data].into_iter().flatten() {
                self.streams.remove(&s);
            }
        }
    }

    /// Pairs whose second stream never came: told so on the error stream, as the kubelet
    /// does, and closed.
    async fn expire(&mut self) {
        let late: Vec<String> = self
            .pairs
            .iter()
            .filter(|(_, p)| !p.started && p.since.elapsed() > STREAM_CREATION_TIMEOUT)
            .map(|(r, _)| r.clone())
            .collect();
        for request in late {
            let Some(pair) = self.pairs.remove(&request) else { continue };
            if let Some(e) = pair.error {
                let message = format!("timed out waiting for streams of request {request}");
                self.send(Frame::Data { stream: e, flags: 0, data: message.into_bytes() }).await;
                self.send(Frame::Data { stream: e, flags: FIN, data: vec![] }).await;
                self.streams.remove(&e);
            }
            if let Some(d) = pair.data {
                self.reset(d, spdy::CANCEL).await;
                self.streams.remove(&d);
            }
        }
    }
}

/// A new stream's kind and port, or why it is refused (the kubelet's checks and words).
fn check_stream(headers: &spdy::Headers) -> Result<(Kind, u16), String> {
    let port = spdy::header(headers, "port").filter(|p| !p.is_empty()).ok_or("\"port\" header is required")?;
    let port: u16 = port.parse().map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port < 1 {
        return Err(format!("port \"{port}\" must be > 0"));
    }
    let kind = match spdy::header(headers, "streamtype") {
        None | Some("") => return Err("\"streamtype\" header is required".into()),
        Some("error") => Kind::Error,
        Some("data") => Kind::Data,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
    };
    Ok((kind, port))
}

/// One forwarded connection: the pod's port and the pair's two streams.
struct Forward {
    target: Target,
    port: u16,
    error: u32,
    data: u32,
    out: mpsc::Sender<Frame>,
}

impl Forward {
    async fn run(self, mut inbound: mpsc::Receiver<Vec<u8>>, mut cancel: oneshot::Receiver<()>) {
        let connected = tokio::select! {
            c = connect(&self.target, self.port) => Some(c),
            _ = &mut cancel => None,
        };
        match connected {
            None => {}
            Some(Err(why)) => {
                let message = format!(
                    "error forwarding port {} to pod {}, uid {}: {why}",
                    self.port, self.target.name, self.target.uid
                );
                tracing::info!(pod = self.target.name, "port-forward: {message}");
                let _ = self.out.send(Frame::Data { stream: self.error, flags: 0, data: message.into_bytes() }).await;
            }
            Some(Ok(tcp)) => {
                let (mut from_pod, mut to_pod) = tcp.into_split();
                let up = async move {
                    while let Some(bytes) = inbound.recv().await {
                        if to_pod.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    // The client's half ended: so does ours towards the pod.
                    let _ = to_pod.shutdown().await;
                    std::future::pending::<()>().await;
                };
                let (out, data) = (self.out.clone(), self.data);
                let down = async move {
                    let mut buf = vec![0u8; CHUNK];
                    while let Ok(n @ 1..) = from_pod.read(&mut buf).await {
                        if out.send(Frame::Data { stream: data, flags: 0, data: buf[..n].to_vec() }).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::pin!(up, down);
                let mut up_done = false;
                loop {
                    tokio::select! {
                        () = &mut down => break,
                        () = &mut up, if !up_done => up_done = true,
                        _ = &mut cancel => break,
                    }
                }
            }
        }
        // As the kubelet closes them: the error stream, then the data stream.
        let _ = self.out.send(Frame::Data { stream: self.error, flags: FIN, data: vec![] }).await;
        let _ = self.out.send(Frame::Data { stream: self.data, flags: FIN, data: vec![] }).await;
    }
}

/// A connection to `localhost:port` in the pod's network namespace (IPv4, then IPv6), in
/// containerd's words when it fails.
async fn connect(target: &Target, port: u16) -> Result<tokio::net::TcpStream, String> {
    let netns = target.netns.clone();
    let std = tokio::task::spawn_blocking(move || {
        let dial = || {
            let v4 =
                std::net::TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), CONNECT_TIMEOUT);
            v4.or_else(|e4| {
                std::net::TcpStream::connect_timeout(&SocketAddr::from((Ipv6Addr::LOCALHOST, port)), CONNECT_TIMEOUT)
                    .map_err(|e6| (e4, e6))
            })
        };
        let place = netns.as_ref().map_or_else(|| "the host".to_string(), |p| format!("{:?}", p.display().to_string()));
        let dialed = match &netns {
            Some(path) => crate::network::run_in_netns(path, dial).map_err(|e| e.to_string())?,
            None => dial(),
        };
        dialed.map_err(|(e4, e6)| {
            format!("failed to connect to localhost:{port} inside namespace {place}, IPv4: {e4} IPv6 {e6} ")
        })
    })
    .await
    .map_err(|e| format!("connecting: {e}"))??;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = std.set_nodelay(true);
    tokio::net::TcpStream::from_std(std).map_err(|e| e.to_string())
}
