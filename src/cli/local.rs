//! The local clients' side of the daemon's API: one HTTP/1.1 request over its unix socket.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Where the daemon listens.
#[derive(Args, Clone, Debug)]
pub struct SocketArgs {
    /// The daemon's socket (default ROOT/nodectl.sock; also NODECTL_SOCKET).
    #[arg(long, env = "NODECTL_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl SocketArgs {
    pub fn path(&self, root: &Path) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| root.join("nodectl.sock"))
    }
}

/// An answer: its status code and body.
pub struct Answer {
    pub code: u16,
    /// What an apply did (created, configured, unchanged).
    pub applied: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON if the call succeeded, else the Status message as an error.
    pub fn json(self) -> Result<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&self.code) {
            return Ok(v);
        }
        Err(anyhow!("{}", v["message"].as_str().map(String::from).unwrap_or_else(|| format!("HTTP {}", self.code))))
    }
}

/// An HTTP/1.1 connection to the daemon, driven in the background.
async fn connect(socket: &Path) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::UnixStream::connect(socket).await.with_context(|| {
        format!("connect to the node daemon at {} (is `nodectl daemon` running?)", socket.display())
    })?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("talk to the node daemon")?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request to the daemon.
pub fn call(socket: &Path, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        let mut sender = connect(socket).await?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "nodectl")
            .header("content-type", "application/yaml")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("request")?;
        let resp = sender.send_request(req).await.context("the node daemon's answer")?;
        let code = resp.status().as_u16();
        let applied =
            resp.headers().get(crate::node::daemon::api::APPLIED).and_then(|v| v.to_str().ok()).map(String::from);
        let body = resp.into_body().collect().await.context("the node daemon's answer")?.to_bytes().to_vec();
        Ok(Answer { code, applied, body })
    })
}

/// A GET whose body is copied to `out` as it comes (`logs -f`); the exit code.
pub fn stream(socket: &Path, path: &str, out: &mut dyn std::io::Write) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        let mut sender = connect(socket).await?;
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", "nodectl")
            .body(Full::new(Bytes::new()))
            .context("request")?;
        let mut resp = sender.send_request(req).await.context("the node daemon's answer")?;
        let code = resp.status().as_u16();
        if code != 200 {
            let body = resp.into_body().collect().await.context("the node daemon's answer")?.to_bytes().to_vec();
            return Answer { code, applied: None, body }.json().map(|_| 1);
        }
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.context("the node daemon's answer")?;
            if let Some(data) = frame.data_ref() {
                // A closed stdout (a pipe to `head`) ends the command, not with a panic.
                if out.write_all(data).and_then(|()| out.flush()).is_err() {
                    return Ok(0);
                }
            }
        }
        Ok(0)
    })
}
