//! hickory's server on one UDP socket and one TCP listener: the cluster's names answered
//! from the [`Zone`], every other one from the [`Forwarder`]; an ExternalName's CNAME is
//! followed through the forwarder (as CoreDNS does), so a pod gets its addresses at once.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use super::forward::Forwarder;
use super::records::{Answer, Zone};

/// How long an idle TCP connection is kept (CoreDNS's default read timeout).
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Handler {
    pub zone: Arc<RwLock<Zone>>,
    pub forward: Forwarder,
}

impl Handler {
    async fn answer(&self, request: &Request) -> (Answer, bool) {
        let Ok(info) = request.request_info() else { return (refused(ResponseCode::FormErr), false) };
        let name = info.query.name().into();
        let qtype = info.query.query_type();
        // The lock is never held across an await.
        let local = match self.zone.read() {
            Ok(zone) => zone.answer(&name, qtype),
            Err(_) => return (refused(ResponseCode::ServFail), false),
        };
        let Some(mut answer) = local else { return (self.forward.ask(&name, qtype).await, false) };
        if let [cname] = answer.answers.as_slice()
            && let RData::CNAME(target) = cname.data()
            && qtype != RecordType::CNAME
        {
            let target = target.0.clone();
            let in_cluster = self.zone.read().map(|z| z.is_cluster_name(&target)).unwrap_or(false);
            if !in_cluster {
                let more = self.forward.ask(&target, qtype).await;
                answer.answers.extend(more.answers);
            }
        }
        (answer, true)
    }
}

fn refused(code: ResponseCode) -> Answer {
    Answer { code, answers: Vec::new(), authority: Vec::new(), additionals: Vec::new() }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            let msg = builder.error_msg(request.header(), ResponseCode::NotImp);
            return send(&mut response, msg).await;
        }
        let (answer, authoritative) = self.answer(request).await;
        let mut header = Header::response_from_request(request.header());
        header.set_response_code(answer.code);
        header.set_authoritative(authoritative);
        header.set_recursion_available(true);
        let msg = builder.build(header, answer.answers.iter(), answer.authority.iter(), [], answer.additionals.iter());
        send(&mut response, msg).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "DNS answer not sent");
            let mut h = Header::new();
            h.set_response_code(ResponseCode::ServFail);
            h.into()
        }
    }
}

/// A socket bound to `addr` even before the address exists: the node's DNS listens on
/// its bridge's gateway address, which the bridge gets with the first pod.
fn bind(addr: SocketAddr, kind: socket2::Type) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_freebind_v6(true)?;
    }
    s.set_nonblocking(true)?;
    if kind == socket2::Type::STREAM {
        s.set_reuse_address(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s)
}

/// Serves `handler` on UDP and TCP at `addr` until the returned server is shut down.
pub async fn serve(addr: SocketAddr, handler: Handler) -> std::io::Result<ServerFuture<Handler>> {
    let udp = tokio::net::UdpSocket::from_std(bind(addr, socket2::Type::DGRAM)?.into())?;
    let tcp = bind(addr, socket2::Type::STREAM)?;
    tcp.listen(1024)?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into())?;
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT);
    Ok(server)
}
