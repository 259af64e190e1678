//! Where requests go: [`Target`] (the parsed `--base-url`, `--endpoint`, headers, API key and
//! response limits) and the checks that keep an adapter's path and headers inside it. This is
//! the boundary a plugin cannot cross, so it lives on its own.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Uri};

use crate::plugin::backend::Framing;
use crate::records::RequestError;

use super::errors::fail;
use super::limits::Limits;

/// Where and how requests are sent. The API key lives only here, as a sensitive header value
/// that is never formatted into records, logs or errors.
#[derive(Clone)]
pub struct Target {
    /// Scheme and authority plus any path prefix of `--base-url`, without a trailing slash.
    pub base_url: String,
    /// `--endpoint`, replacing the adapter's default path.
    pub endpoint: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The `Authorization` value from `--api-key` (see [`Target::bearer`]).
    pub authorization: Option<HeaderValue>,
    /// `--api-key-header`: send the key raw in this header instead of `Authorization: Bearer`
    /// (Anthropic's `x-api-key`, Azure's `api-key`).
    pub api_key_header: Option<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub framing: Framing,
    /// Bounds on each response: head and idle timeouts, body, frame and output sizes.
    pub limits: Limits,
}

impl Target {
    /// An HTTP request to `path` under `--base-url`, with the adapter's headers, then the user's
    /// `--header`s and the API key on top.
    ///
    /// The boundary a plugin cannot cross: the URL is the parsed `--base-url` (scheme, host,
    /// port, path prefix) plus a checked path ([`checked_path`]), and the adapter may not set
    /// the headers that carry identity or framing ([`HOST_ONLY_HEADERS`]); on a header the user
    /// gave with `--header` the user's value wins. A refusal fails the request as a `plugin`
    /// error naming what was refused; nothing is sent.
    pub fn request(
        &self,
        path: &str,
        method: &str,
        adapter_headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, RequestError> {
        let (uri, userinfo) = self.url(path).map_err(|why| {
            if self.endpoint.as_deref() == Some(path) {
                fail("bad-request", format!("--endpoint {path:?} refused: {why}"))
            } else {
                fail(
                    "plugin",
                    format!("the adapter's path {path:?} refused: {why}"),
                )
            }
        })?;
        let mut builder = Request::builder().method(method).uri(uri);
        let headers = builder.headers_mut().expect("valid builder");
        for (k, v) in adapter_headers {
            let name = HeaderName::try_from(k.as_str()).map_err(|_| {
                fail(
                    "plugin",
                    format!("the adapter's header name {k:?} is not a valid header name"),
                )
            })?;
            if HOST_ONLY_HEADERS.contains(&name.as_str()) {
                return Err(fail(
                    "plugin",
                    format!(
                        "the adapter may not set the {name} header (llmb sets it from --base-url, \
                         --api-key and --header)"
                    ),
                ));
            }
            if self.headers.iter().any(|(user, _)| *user == name) {
                continue;
            }
            let value = HeaderValue::try_from(v.as_str()).map_err(|_| {
                fail(
                    "plugin",
                    format!("the adapter's {name} header value is not a valid header value"),
                )
            })?;
            headers.insert(name, value);
        }
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        if let Some((name, key)) = &self.api_key_header {
            headers.insert(name.clone(), key.clone());
        }
        if let Some(auth) = &self.authorization {
            headers.insert(hyper::header::AUTHORIZATION, auth.clone());
        } else if let Some(info) = userinfo
            && !headers.contains_key(hyper::header::AUTHORIZATION)
        {
            headers.insert(hyper::header::AUTHORIZATION, basic_auth(&info));
        }
        builder.body(Full::new(Bytes::from(body))).map_err(|e| {
            fail(
                "plugin",
                format!("the adapter built an invalid request: {e}"),
            )
        })
    }

    /// The absolute URL for `path` (path and optional query) under `--base-url`, without the
    /// base's user-info (returned apart, percent-decoded, for Basic authentication).
    pub fn url(&self, path: &str) -> Result<(Uri, Option<String>), String> {
        let shown = || crate::secrets::redact_url(&self.base_url);
        let base: Uri = self
            .base_url
            .parse()
            .map_err(|e| format!("--base-url {} is not a URL: {e}", shown()))?;
        let scheme = base
            .scheme()
            .filter(|s| matches!(s.as_str(), "http" | "https"))
            .ok_or_else(|| format!("--base-url {} is not an http(s) URL", shown()))?
            .clone();
        let authority = base
            .authority()
            .ok_or_else(|| format!("--base-url {} has no host", shown()))?;
        let (userinfo, host_port) = match authority.as_str().rsplit_once('@') {
            Some((info, host)) => (Some(info), host),
            None => (None, authority.as_str()),
        };
        let (path, query) = checked_path(path)?;
        let prefix = base.path().trim_end_matches('/');
        let mut path_and_query = format!("{prefix}{path}");
        for q in [query, base.query()].into_iter().flatten() {
            if !q.is_empty() {
                path_and_query.push(if path_and_query.contains('?') {
                    '&'
                } else {
                    '?'
                });
                path_and_query.push_str(q);
            }
        }
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(host_port)
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| format!("not a valid URL path: {e}"))?;
        // Belt and braces: whatever the path held, the request goes where --base-url says.
        if uri.scheme() != base.scheme()
            || uri.host() != base.host()
            || uri.port_u16() != base.port_u16()
        {
            return Err("it would change the scheme, host or port of --base-url".into());
        }
        let userinfo = userinfo
            .filter(|i| !i.is_empty())
            .map(|i| crate::secrets::percent_decode(i).unwrap_or_else(|| i.to_string()));
        Ok((uri, userinfo))
    }

    /// `req` with the user's headers and credentials, for the requests llmb makes by itself
    /// (`/v1/models` probes): a server that wants a key wants it there too.
    pub fn with_credentials(
        &self,
        mut req: hyper::http::request::Builder,
    ) -> hyper::http::request::Builder {
        // Inserted (a later one replaces an earlier one of the same name) in `request`'s order,
        // so a probe carries exactly what a measured request carries.
        if let Some(headers) = req.headers_mut() {
            for (name, value) in &self.headers {
                headers.insert(name.clone(), value.clone());
            }
            if let Some((name, key)) = &self.api_key_header {
                headers.insert(name.clone(), key.clone());
            }
            if let Some(auth) = &self.authorization {
                headers.insert(hyper::header::AUTHORIZATION, auth.clone());
            }
        }
        req
    }

    /// The key as the value of header `name` (`--api-key-header`), sensitive and registered as a
    /// secret like [`Target::bearer`]'s.
    pub fn key_header(name: &str, api_key: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
        crate::secrets::register(api_key);
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| anyhow::anyhow!("--api-key-header {name:?} is not a header name"))?;
        let mut v = HeaderValue::from_str(api_key).map_err(|_| {
            anyhow::anyhow!("the API key contains characters not allowed in a header")
        })?;
        v.set_sensitive(true);
        Ok((name, v))
    }

    /// Builds the `Authorization: Bearer` value, marked sensitive so hyper never logs it.
    /// The key is registered as a secret, so no output of this process shows it.
    pub fn bearer(api_key: &str) -> anyhow::Result<HeaderValue> {
        crate::secrets::register(api_key);
        let mut v = HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| {
            anyhow::anyhow!("the API key contains characters not allowed in a header")
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// Headers only llmb sets: where the request goes and who sends it (`Host`, credentials), and
/// how its body is framed on a pooled connection (a plugin-chosen length could smuggle a second
/// request).
pub const HOST_ONLY_HEADERS: [&str; 9] = [
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "proxy-connection",
];

/// Splits a request path into path and query after checking that it can only name a resource
/// under `--base-url`: it starts with one `/`, has no scheme or authority (`//host`,
/// `http://`), no `.`/`..` segments, no backslash, whitespace, control character or fragment,
/// and percent-decoding it changes none of that.
pub fn checked_path(path: &str) -> Result<(&str, Option<&str>), String> {
    if !path.starts_with('/') {
        return Err("a path must start with / (it is joined to --base-url)".into());
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '\\' | '#'))
    {
        return Err(format!("it contains {c:?}"));
    }
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let decoded = crate::secrets::percent_decode(p);
    for (form, how) in [(Some(p), ""), (decoded.as_deref(), " once percent-decoded")] {
        let Some(form) = form else { continue };
        if form.starts_with("//") {
            return Err(format!("it names a host (starts with //){how}"));
        }
        if form.contains("://") {
            return Err(format!("it holds a URL (\"://\"){how}"));
        }
        if form.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(format!(
                "it has a \".\" or \"..\" segment{how}, which would leave the --base-url path"
            ));
        }
        if let Some(c) = form.chars().find(|c| c.is_control() || matches!(c, '\\')) {
            return Err(format!("it contains {c:?}{how}"));
        }
    }
    Ok((p, query))
}

/// `Authorization: Basic` for the user-info of `--base-url` (`user:password`), marked sensitive.
fn basic_auth(userinfo: &str) -> HeaderValue {
    let encoded = crate::secrets::base64(userinfo.as_bytes());
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        authorization: Option<HeaderValue>,
        key_header: Option<(HeaderName, HeaderValue)>,
    ) -> Target {
        Target {
            base_url: "http://127.0.0.1:9".into(),
            endpoint: None,
            headers: Vec::new(),
            authorization,
            api_key_header: key_header,
            timeout: Duration::from_secs(1),
            framing: Framing::Sse,
            limits: Default::default(),
        }
    }

    #[test]
    fn the_key_goes_in_the_header_asked_for() {
        let t = target(
            None,
            Some(Target::key_header("x-api-key", "sk-ant-test-1").unwrap()),
        );
        let req = t
            .request(
                "/v1/messages",
                "POST",
                &[("x-api-key".into(), "forged".into())],
                Vec::new(),
            )
            .unwrap();
        assert_eq!(req.headers()["x-api-key"], "sk-ant-test-1");
        assert!(req.headers()["x-api-key"].is_sensitive());
        assert!(!req.headers().contains_key(hyper::header::AUTHORIZATION));
        let bearer = target(Some(Target::bearer("sk-test-2").unwrap()), None);
        let req = bearer
            .request("/v1/chat/completions", "POST", &[], Vec::new())
            .unwrap();
        assert_eq!(
            req.headers()[hyper::header::AUTHORIZATION],
            "Bearer sk-test-2"
        );
        assert!(Target::key_header("bad header", "k").is_err());
    }
}
