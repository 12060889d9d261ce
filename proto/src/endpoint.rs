//! Engine addresses and connecting to them.
//!
//! An address is `http://host:port`, `https://host:port`, `host:port`, or
//! `unix:///path/to/engine.sock`.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};

/// Where an engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineAddr {
    /// `http://host:port` (the scheme is kept as given).
    Tcp(String),
    /// `unix:///path`.
    Unix(PathBuf),
}

/// An address that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("invalid engine address {addr:?}: {why}; use http://HOST:PORT, HOST:PORT or unix:///PATH")]
pub struct AddrError {
    addr: String,
    why: String,
}

impl FromStr for EngineAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| AddrError {
            addr: s.to_owned(),
            why: why.to_owned(),
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(err("the socket path is empty"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let url = if s.starts_with("http://") || s.starts_with("https://") {
            s.to_owned()
        } else if s.contains("://") {
            return Err(err("the scheme is not http, https or unix"));
        } else {
            format!("http://{s}")
        };
        let uri: Uri = url.parse().map_err(|e| err(&format!("{e}")))?;
        if uri.host().is_none() {
            return Err(err("it has no host"));
        }
        Ok(Self::Tcp(url))
    }
}

impl fmt::Display for EngineAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(url) => f.write_str(url),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

impl EngineAddr {
    /// Opens a channel to the engine. Fails when the engine cannot be
    /// reached now; the channel reconnects by itself afterwards.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        self.connect_with(None).await
    }

    /// As [`connect`](Self::connect); an `https://` address speaks TLS with
    /// `tls` (from [`ClientTls::load`](crate::tls::ClientTls::load)), or
    /// trusting the system's roots when `None`. Other addresses ignore it.
    pub async fn connect_with(
        &self,
        tls: Option<&ClientTlsConfig>,
    ) -> Result<Channel, tonic::transport::Error> {
        self.connect_pinging(tls, None).await
    }

    /// As [`connect_with`](Self::connect_with), with HTTP/2 pings as
    /// `keepalive` says, on TCP and the Unix socket alike, even while idle.
    /// Without one, TCP channels ping every 10 s while calls are out.
    pub async fn connect_pinging(
        &self,
        tls: Option<&ClientTlsConfig>,
        keepalive: Option<Keepalive>,
    ) -> Result<Channel, tonic::transport::Error> {
        let endpoint = |url: String| -> Result<Endpoint, tonic::transport::Error> {
            let endpoint = Endpoint::from_shared(url)?.connect_timeout(Duration::from_secs(5));
            Ok(match keepalive {
                Some(k) => endpoint
                    .http2_keep_alive_interval(k.interval)
                    .keep_alive_timeout(k.timeout)
                    .keep_alive_while_idle(true),
                None => endpoint,
            })
        };
        match self {
            Self::Tcp(url) => {
                let mut endpoint = endpoint(url.clone())?.tcp_nodelay(true);
                if keepalive.is_none() {
                    endpoint = endpoint
                        .http2_keep_alive_interval(Duration::from_secs(10))
                        .keep_alive_timeout(Duration::from_secs(20));
                }
                if url.starts_with("https://") {
                    endpoint = endpoint.tls_config(
                        tls.cloned()
                            .unwrap_or_else(|| ClientTlsConfig::new().with_native_roots()),
                    )?;
                }
                endpoint.connect().await
            }
            Self::Unix(path) => {
                let path = path.clone();
                // The URI is required by the HTTP layer but never resolved.
                endpoint("http://engine.sock".to_owned())?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            }
        }
    }
}

/// HTTP/2 pings on a channel: an engine that stops answering (a frozen
/// process, a host gone, a cable pulled) fails the channel's calls and
/// streams within `interval + timeout`, however quiet the engine's own
/// traffic is, and on a Unix socket too, which has no TCP keep-alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// A ping goes out after this long without a word from the engine,
    /// calls out or not.
    pub interval: Duration,
    /// The engine has this long to answer it.
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "127.0.0.1:7465".parse::<EngineAddr>().unwrap(),
            EngineAddr::Tcp("http://127.0.0.1:7465".into())
        );
        assert_eq!(
            "unix:///run/opsdeck/engine.sock"
                .parse::<EngineAddr>()
                .unwrap(),
            EngineAddr::Unix("/run/opsdeck/engine.sock".into())
        );
        assert!("ftp://x".parse::<EngineAddr>().is_err());
        assert!("".parse::<EngineAddr>().is_err());
        assert!("unix://".parse::<EngineAddr>().is_err());
    }
}
