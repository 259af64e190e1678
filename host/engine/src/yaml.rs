//! YAML files read into the same value tree as TOML ones, so recipes, sweep configs and SLO
//! files take either format under one set of rules.
//!
//! Parsing is serde-saphyr's (pure Rust, YAML 1.2): `yes`/`no`/`on` stay strings (only `true`
//! and `false` are booleans), a key given twice is an error, and syntax errors carry the line and
//! column. A key whose value is empty (`base_url:` or `~`) is left out, as an option whose
//! `${VAR:-}` expands to nothing is.

use std::path::Path;

use anyhow::bail;
use serde_json::Value as Json;
use toml::Value;

/// Whether `path` names a YAML file (`.yaml` or `.yml`, any case).
pub fn is_yaml_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Whether `path` names a TOML file.
pub fn is_toml_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// A TOML or YAML file's table: `.yaml`/`.yml` is YAML, `.toml` TOML, and a file of another
/// name is read as TOML, else as YAML. `what` starts every error ("recipe sweep.yaml").
pub fn parse_toml_or_yaml(path: &Path, text: &str, what: &str) -> anyhow::Result<toml::Table> {
    if is_yaml_path(path) {
        return parse_table(text, what);
    }
    match text.parse::<toml::Table>() {
        Ok(doc) => Ok(doc),
        Err(e) if is_toml_path(path) => bail!("{what}: not valid TOML: {e}"),
        Err(toml_err) => parse_table(text, what).map_err(|yaml_err| {
            let yaml_err = yaml_err.to_string();
            let yaml_err = yaml_err
                .strip_prefix(&format!("{what}: not valid YAML: "))
                .unwrap_or(&yaml_err);
            anyhow::anyhow!(
                "{what}: not valid TOML ({}), nor YAML ({yaml_err})",
                toml_err.to_string().trim_end()
            )
        }),
    }
}

/// Parses a YAML document whose top level is a mapping into a TOML table; an empty document is
/// an empty table. `what` starts every error ("recipe sweep.yaml").
pub fn parse_table(text: &str, what: &str) -> anyhow::Result<toml::Table> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let doc: Json = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| anyhow::anyhow!("{what}: not valid YAML: {}", e.to_string().trim_end()))?;
    match doc {
        Json::Null => Ok(toml::Table::new()),
        Json::Object(map) => table(map, "", what),
        other => bail!(
            "{what}: expected keys and values at the top level, found {}",
            kind(&other)
        ),
    }
}

fn table(map: serde_json::Map<String, Json>, at: &str, what: &str) -> anyhow::Result<toml::Table> {
    let mut out = toml::Table::new();
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        out.insert(key, convert(value, &path, what)?);
    }
    Ok(out)
}

fn convert(value: Json, at: &str, what: &str) -> anyhow::Result<Value> {
    Ok(match value {
        Json::Null => bail!("{what}: {at}: an empty value (null) inside a list"),
        Json::Bool(b) => Value::Boolean(b),
        Json::String(s) => Value::String(s),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Integer(i),
            (None, Some(f)) if n.is_f64() => Value::Float(f),
            _ => bail!("{what}: {at}: the number {n} is out of range"),
        },
        Json::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| convert(v, &format!("{at}[{}]", i + 1), what))
                .collect::<anyhow::Result<_>>()?,
        ),
        Json::Object(map) => Value::Table(table(map, at, what)?),
    })
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "nothing",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_becomes_the_toml_tree() {
        let t = parse_table(
            "model: m\nempty:\nflag: yes\non: true\nio: [[256, 256], [512, 1.5]]\nslo: {ttft_ms: 1000}\n",
            "recipe x.yaml",
        )
        .unwrap();
        assert_eq!(t["model"].as_str(), Some("m"));
        assert!(
            !t.contains_key("empty"),
            "an empty value leaves the key out"
        );
        assert_eq!(t["flag"].as_str(), Some("yes"), "YAML 1.2 booleans only");
        assert_eq!(t["on"].as_bool(), Some(true));
        assert_eq!(
            t["io"].as_array().unwrap()[1].as_array().unwrap()[1].as_float(),
            Some(1.5)
        );
        assert_eq!(t["slo"]["ttft_ms"].as_integer(), Some(1000));
        assert!(parse_table("", "f").unwrap().is_empty());

        let err = parse_table("- a\n- b\n", "recipe l.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("recipe l.yaml") && err.contains("a list"),
            "{err}"
        );
        let err = parse_table("a: 1\na: 2\n", "recipe d.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not valid YAML") && err.contains("duplicate"),
            "{err}"
        );
        let err = parse_table("a: [1,\n", "recipe s.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = parse_table("a: [1, ~]\n", "recipe n.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a[2]"), "{err}");
    }
}
