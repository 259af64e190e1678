//! Getting bytes from where an index says they are: a local path, `file://`, or HTTP(S).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Limited};

/// Largest file fetched: far beyond any adapter (first-party ones are 0.2-2 MiB).
pub const MAX_BYTES: usize = 64 << 20;

/// A place bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Path(PathBuf),
    Url(String),
}

impl Location {
    /// `http://`/`https://` URLs are fetched; `file://` and everything else is a path.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("http://") || s.starts_with("https://") {
            Location::Url(s.to_string())
        } else if let Some(path) = s.strip_prefix("file://") {
            Location::Path(PathBuf::from(path))
        } else {
            Location::Path(PathBuf::from(s))
        }
    }

    /// `rel` resolved against this location as a file's (its folder), unless `rel` is absolute.
    pub fn sibling(&self, rel: &str) -> Location {
        let parsed = Location::parse(rel);
        match (&parsed, self) {
            (Location::Url(_), _) => parsed,
            (Location::Path(p), _) if p.is_absolute() => parsed,
            (Location::Path(p), Location::Path(base)) => {
                Location::Path(base.parent().unwrap_or(Path::new(".")).join(p))
            }
            (Location::Path(_), Location::Url(base)) => {
                let dir = &base[..base.rfind('/').map_or(base.len(), |i| i + 1)];
                Location::Url(format!("{dir}{rel}"))
            }
        }
    }

    /// `rel` under this location taken as a folder.
    pub fn child(&self, rel: &str) -> Location {
        match self {
            Location::Path(dir) => Location::Path(dir.join(rel)),
            Location::Url(base) => Location::Url(format!("{}/{rel}", base.trim_end_matches('/'))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Path(p) => write!(f, "{}", p.display()),
            Location::Url(u) => f.write_str(u),
        }
    }
}

/// The bytes at `location` (at most [`MAX_BYTES`]; HTTP within 60 s, 2xx only).
pub async fn fetch(location: &Location) -> anyhow::Result<Vec<u8>> {
    match location {
        Location::Path(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            if bytes.len() > MAX_BYTES {
                bail!("{} is larger than {MAX_BYTES} bytes", path.display());
            }
            Ok(bytes)
        }
        Location::Url(url) => fetch_url(url)
            .await
            .with_context(|| format!("cannot fetch {url}")),
    }
}

async fn fetch_url(url: &str) -> anyhow::Result<Vec<u8>> {
    let client = llmb_engine::transport::client(1, None, false)?;
    let uri: hyper::Uri = url.parse().context("not a URL")?;
    let req = hyper::Request::get(uri).body(Default::default())?;
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .context("no answer within 60 s")??;
    if !resp.status().is_success() {
        bail!("HTTP {}", resp.status());
    }
    let body = tokio::time::timeout(
        Duration::from_secs(60),
        Limited::new(resp.into_body(), MAX_BYTES).collect(),
    )
    .await
    .context("the body did not arrive within 60 s")?
    .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_artifacts_resolve_beside_their_manifest() {
        let m = Location::parse("https://example.com/idx/plugins/tgi/0.1.0.json");
        assert_eq!(
            m.sibling("tgi-0.1.0.wasm"),
            Location::Url("https://example.com/idx/plugins/tgi/tgi-0.1.0.wasm".into())
        );
        assert_eq!(
            m.sibling("https://cdn.example/x.wasm"),
            Location::Url("https://cdn.example/x.wasm".into())
        );
        let p = Location::parse("/srv/idx/plugins/tgi/0.1.0.json");
        assert_eq!(
            p.sibling("tgi-0.1.0.wasm"),
            Location::Path("/srv/idx/plugins/tgi/tgi-0.1.0.wasm".into())
        );
        assert_eq!(
            Location::parse("file:///srv/idx").child("index.json"),
            Location::Path("/srv/idx/index.json".into())
        );
        assert_eq!(
            Location::parse("http://127.0.0.1:9/idx/").child("index.json"),
            Location::Url("http://127.0.0.1:9/idx/index.json".into())
        );
    }
}
