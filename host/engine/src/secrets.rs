//! Secrets the user hands llmb (the API key, secret `--header` values, credentials in
//! `--base-url`) are registered here once, and every place that writes text out of the process
//! (records, CSV, result JSON, plugin log lines, the final error message) passes that text
//! through [`scrub`], which replaces each registered value with `***`.
//!
//! Which `--header`s are secret: `--secret-header K=V` always; `--header K=V` when the name is
//! Authorization, Proxy-Authorization or Cookie, or one of its `-`/`_`-separated words is a
//! credential word (`key`, `apikey`, `token`, `secret`, `password`, `auth`, `cookie`,
//! `session`, `credential`, `signature`): `x-api-key`, `api-key`, `x-auth-token`,
//! `ocp-apim-subscription-key`, ...

use std::borrow::Cow;
use std::sync::RwLock;

/// What replaces a secret in any output.
pub const MASK: &str = "***";

/// Values shorter than this cannot be told apart from ordinary text and are not scrubbed.
const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers `value` (and the forms it takes inside JSON and URLs) as a secret for the rest of
/// the process.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_LEN {
        return;
    }
    let mut forms = vec![value.to_string()];
    // `Bearer KEY`, `Basic B64`: the credential alone is secret too.
    if let Some((_, credential)) = value.split_once(' ') {
        forms.push(credential.trim().to_string());
    }
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json.trim_matches('"');
    forms.push(json.to_string());
    forms.push(percent_encode(value));
    if let Some(decoded) = percent_decode(value) {
        forms.push(decoded);
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if form.len() >= MIN_LEN && !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers what is secret in a URL: its user-info (and the password alone) and the values of
/// query parameters named like credentials (`key`, `api_key`, `token`, `sig`, ...).
pub fn register_url(url: &str) {
    let (userinfo, query) = url_secrets(url);
    if let Some(info) = userinfo {
        register(info);
        if let Some((_, password)) = info.split_once(':') {
            register(password);
        }
        // As it goes on the wire: `Authorization: Basic base64(user:password)`.
        let decoded = percent_decode(info).unwrap_or_else(|| info.to_string());
        register(&base64(decoded.as_bytes()));
    }
    for value in query {
        register(value);
    }
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// [`scrub`] applied to every string (and object key) of a JSON document.
pub fn scrub_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = scrub(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => {
            let dirty: Vec<String> = map
                .keys()
                .filter(|k| matches!(scrub(k), Cow::Owned(_)))
                .cloned()
                .collect();
            for key in dirty {
                if let Some(v) = map.remove(&key) {
                    map.insert(scrub(&key).into_owned(), v);
                }
            }
            map.values_mut().for_each(scrub_json);
        }
        _ => {}
    }
}

/// `url` as it may be shown: user-info replaced by `***@` and credential-like query values by
/// `***`, whether or not they were registered.
pub fn redact_url(url: &str) -> String {
    let (userinfo, query) = url_secrets(url);
    let mut out = url.to_string();
    if let Some(info) = userinfo {
        out = out.replacen(&format!("{info}@"), &format!("{MASK}@"), 1);
    }
    for value in query {
        if !value.is_empty() {
            out = out.replace(&format!("={value}"), &format!("={MASK}"));
        }
    }
    scrub(&out).into_owned()
}

/// Whether a `--header` of this name carries a credential (see the module documentation).
pub fn is_secret_header(name: &str) -> bool {
    const WORDS: [&str; 13] = [
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "authorization",
        "cookie",
        "session",
        "credential",
        "credentials",
        "signature",
    ];
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || name.split(['-', '_']).any(|word| WORDS.contains(&word))
}

/// The user-info of `url` and the values of its credential-like query parameters.
fn url_secrets(url: &str) -> (Option<&str>, Vec<&str>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let userinfo = authority.rsplit_once('@').map(|(info, _)| info);
    let query = rest[end..]
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(q))
        .unwrap_or("");
    let values = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| secret_query_name(name))
        .map(|(_, value)| value)
        .collect();
    (userinfo.filter(|i| !i.is_empty()), values)
}

fn secret_query_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "sig" | "code" | "access_token" | "api-key") || is_secret_header(&name)
}

/// Standard base64 with padding (for `Authorization: Basic`).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes `s`; None when it has no escapes or they do not decode to UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("bob:pw!", "Ym9iOnB3IQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn header_names() {
        for secret in [
            "Authorization",
            "x-api-key",
            "api-key",
            "X-Auth-Token",
            "ocp-apim-subscription-key",
            "Cookie",
        ] {
            assert!(is_secret_header(secret), "{secret}");
        }
        for plain in ["content-type", "x-request-id", "x-tokenizer", "x-keyword"] {
            assert!(!is_secret_header(plain), "{plain}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://alice:pw-123456@host:8443/v1?key=abcdef&x=1"),
            "https://***@host:8443/v1?key=***&x=1"
        );
        assert_eq!(redact_url("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
    }

    #[test]
    fn registered_values_are_scrubbed_in_every_form() {
        register("s3cr3t/with\"quote");
        assert_eq!(scrub("key s3cr3t/with\"quote!"), "key ***!");
        assert_eq!(scrub(r#"{"m":"s3cr3t/with\"quote"}"#), r#"{"m":"***"}"#);
        assert_eq!(scrub("u=s3cr3t%2Fwith%22quote"), "u=***");
        assert_eq!(scrub("nothing here"), "nothing here");
    }
}
