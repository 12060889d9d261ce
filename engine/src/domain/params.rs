//! A spec's parameters: `[params]` declares them, a submit gives values,
//! and `${params.NAME}` in a step's command, env values and workdir, and in
//! the run's labels, is replaced by the value. A secret is never built
//! from a parameter: a secret entry names the engine's secret, and nothing
//! is substituted into that name.
//!
//! ```toml
//! [params]
//! version = { type = "string", required = true, pattern = "^v[0-9]+\\.[0-9]+\\.[0-9]+$" }
//! env = { type = "enum", values = ["staging", "prod"], default = "staging" }
//! replicas = { type = "int", default = 2 }
//! dry_run = { type = "bool", default = false }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// The most parameters a spec declares.
pub const MAX_PARAMS: usize = 64;
/// The most bytes of one parameter's value.
pub const MAX_VALUE_BYTES: usize = 4096;
/// What a reference to a parameter starts with.
const REF_OPEN: &str = "${params.";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    #[serde(rename = "type")]
    kind: Option<String>,
    default: Option<toml::Value>,
    #[serde(default)]
    required: bool,
    pattern: Option<String>,
    values: Option<Vec<String>>,
    /// For people reading the spec; the engine does not use it.
    #[serde(rename = "description")]
    _description: Option<String>,
}

#[derive(Debug)]
enum Kind {
    String { pattern: Option<regex::Regex> },
    Int,
    Bool,
    Enum(Vec<String>),
}

/// A parameter as declared.
#[derive(Debug)]
struct Declared {
    kind: Kind,
    default: Option<String>,
    required: bool,
}

/// The values of a spec's parameters: the given ones checked, the missing
/// ones defaulted. Errors name the parameter and what to fix.
pub(super) fn resolve(
    declared: BTreeMap<String, RawParam>,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    if declared.len() > MAX_PARAMS {
        return Err(format!(
            "the spec declares {} parameters; the limit is {MAX_PARAMS}",
            declared.len()
        ));
    }
    let mut params = BTreeMap::new();
    for (name, raw) in declared {
        validate_name(&name)?;
        params.insert(name.clone(), declare(&name, raw)?);
    }
    if let Some(unknown) = given.keys().find(|k| !params.contains_key(*k)) {
        let known = if params.is_empty() {
            "it declares none (add a [params] table to the spec)".to_owned()
        } else {
            format!(
                "it declares: {}",
                params.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        return Err(format!(
            "parameter {unknown:?} is not declared by the spec; {known}"
        ));
    }
    let mut values = BTreeMap::new();
    for (name, p) in params {
        let value = match (given.get(&name), p.default) {
            (Some(v), _) => {
                check(&name, &p.kind, v)?;
                v.clone()
            }
            (None, Some(default)) => default,
            (None, None) if p.required => {
                return Err(format!(
                    "parameter {name:?} is required and was not given; pass -p {name}=VALUE"
                ));
            }
            // Optional without a default: empty.
            (None, None) => String::new(),
        };
        values.insert(name, value);
    }
    Ok(values)
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "parameter name {name:?} must be 1 to 64 characters of a-z, 0-9 and _, starting with a letter or _"
        ))
    }
}

fn declare(name: &str, raw: RawParam) -> Result<Declared, String> {
    let at = |msg: String| format!("[params] {name}: {msg}");
    let kind = match raw.kind.as_deref().unwrap_or("string") {
        "string" => Kind::String {
            pattern: raw
                .pattern
                .as_deref()
                .map(|p| {
                    // Anchored: a pattern says what the whole value is.
                    regex::Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| at(format!("pattern {p:?} is not a valid regex: {e}")))
                })
                .transpose()?,
        },
        "int" => Kind::Int,
        "bool" => Kind::Bool,
        "enum" => match raw.values.clone() {
            Some(values) if !values.is_empty() => Kind::Enum(values),
            _ => return Err(at("an enum needs `values = [\"a\", \"b\"]`".into())),
        },
        other => {
            return Err(at(format!(
                "type {other:?} is not one of \"string\", \"int\", \"bool\", \"enum\""
            )));
        }
    };
    if raw.pattern.is_some() && !matches!(kind, Kind::String { .. }) {
        return Err(at("`pattern` applies to a string parameter only".into()));
    }
    if raw.values.is_some() && !matches!(kind, Kind::Enum(_)) {
        return Err(at("`values` applies to an enum parameter only".into()));
    }
    let default = match raw.default {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(toml::Value::Integer(i)) => Some(i.to_string()),
        Some(toml::Value::Boolean(b)) => Some(b.to_string()),
        Some(other) => {
            return Err(at(format!(
                "default {other} is not a string, an integer or a boolean"
            )));
        }
    };
    if let Some(d) = &default {
        check(name, &kind, d).map_err(|e| at(format!("the default does not fit: {e}")))?;
        if raw.required {
            return Err(at(
                "a parameter with a default is never missing: drop `required` or the default"
                    .into(),
            ));
        }
    }
    Ok(Declared {
        kind,
        default,
        required: raw.required,
    })
}

fn check(name: &str, kind: &Kind, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "parameter {name:?} is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!("parameter {name:?} contains a NUL byte"));
    }
    match kind {
        Kind::String { pattern: None } => Ok(()),
        Kind::String { pattern: Some(p) } if p.is_match(value) => Ok(()),
        Kind::String { pattern: Some(p) } => {
            let shown = p.as_str();
            let shown = shown
                .strip_prefix("^(?:")
                .and_then(|s| s.strip_suffix(")$"))
                .unwrap_or(shown);
            Err(format!(
                "parameter {name:?} is {value:?}, which does not match its pattern {shown:?}"
            ))
        }
        Kind::Int if value.parse::<i64>().is_ok() => Ok(()),
        Kind::Int => Err(format!(
            "parameter {name:?} is {value:?}, which is not an integer"
        )),
        Kind::Bool if value == "true" || value == "false" => Ok(()),
        Kind::Bool => Err(format!(
            "parameter {name:?} is {value:?}; a bool is true or false"
        )),
        Kind::Enum(values) if values.iter().any(|v| v == value) => Ok(()),
        Kind::Enum(values) => Err(format!(
            "parameter {name:?} is {value:?}, which is not one of: {}",
            values.join(", ")
        )),
    }
}

/// `text` with every `${params.NAME}` replaced by its value; a reference
/// to a parameter the spec does not declare is refused, naming it.
pub(super) fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    if !text.contains(REF_OPEN) {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(REF_OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + REF_OPEN.len()..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "an unclosed reference {:?}; write ${{params.NAME}}",
                &rest[start..]
            ));
        };
        let name = &after[..end];
        let value = values.get(name).ok_or_else(|| {
            let known = if values.is_empty() {
                "the spec declares no parameters (add a [params] table)".to_owned()
            } else {
                format!(
                    "the spec declares: {}",
                    values.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            format!("${{params.{name}}} names no declared parameter; {known}")
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The environment variable a step gets a parameter's value in.
pub fn env_name(param: &str) -> String {
    format!("OPSDECK_PARAM_{}", param.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(toml_text: &str) -> BTreeMap<String, RawParam> {
        #[derive(Deserialize)]
        struct Doc {
            params: BTreeMap<String, RawParam>,
        }
        toml::from_str::<Doc>(toml_text).unwrap().params
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const DECL: &str = r#"
        [params]
        version = { required = true, pattern = "v[0-9]+" }
        env = { type = "enum", values = ["staging", "prod"], default = "staging" }
        replicas = { type = "int", default = 2 }
        dry_run = { type = "bool", default = false }
        note = {}
    "#;

    #[test]
    fn given_values_are_checked_and_missing_ones_defaulted() {
        let v = resolve(declared(DECL), &given(&[("version", "v7")])).unwrap();
        assert_eq!(
            v,
            given(&[
                ("dry_run", "false"),
                ("env", "staging"),
                ("note", ""),
                ("replicas", "2"),
                ("version", "v7"),
            ])
        );
    }

    #[test]
    fn each_bad_value_names_the_parameter_and_why() {
        let cases = [
            (
                vec![],
                "\"version\" is required and was not given; pass -p version=VALUE",
            ),
            (
                vec![("version", "7")],
                "does not match its pattern \"v[0-9]+\"",
            ),
            (
                vec![("version", "v1"), ("env", "qa")],
                "not one of: staging, prod",
            ),
            (
                vec![("version", "v1"), ("replicas", "two")],
                "not an integer",
            ),
            (
                vec![("version", "v1"), ("dry_run", "yes")],
                "a bool is true or false",
            ),
            (
                vec![("version", "v1"), ("verison", "v1")],
                "\"verison\" is not declared by the spec; it declares: dry_run, env, note, replicas, version",
            ),
        ];
        for (pairs, want) in cases {
            let err = resolve(declared(DECL), &given(&pairs)).unwrap_err();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn bad_declarations_are_refused() {
        for (decl, want) in [
            (
                "[params]\nx = { type = \"float\" }",
                "type \"float\" is not one of",
            ),
            ("[params]\nx = { type = \"enum\" }", "an enum needs `values"),
            ("[params]\nx = { pattern = \"(\" }", "not a valid regex"),
            (
                "[params]\nx = { type = \"int\", default = \"a\" }",
                "the default does not fit",
            ),
            ("[params]\nX = {}", "must be 1 to 64 characters"),
            (
                "[params]\nx = { required = true, default = \"a\" }",
                "drop `required` or the default",
            ),
        ] {
            let err = resolve(declared(decl), &BTreeMap::new()).unwrap_err();
            assert!(err.contains(want), "{decl}: {err}");
        }
    }

    #[test]
    fn references_are_replaced_and_unknown_ones_named() {
        let values = given(&[("version", "v2"), ("env", "prod")]);
        assert_eq!(
            substitute(
                "deploy ${params.version} to ${params.env}; ${HOME} stays",
                &values
            )
            .unwrap(),
            "deploy v2 to prod; ${HOME} stays"
        );
        let err = substitute("x ${params.verison}", &values).unwrap_err();
        assert!(
            err.contains(
                "${params.verison} names no declared parameter; the spec declares: env, version"
            ),
            "{err}"
        );
        assert!(
            substitute("x ${params.version", &values)
                .unwrap_err()
                .contains("unclosed")
        );
        // A value is not substituted again.
        let tricky = given(&[("a", "${params.b}"), ("b", "no")]);
        assert_eq!(substitute("${params.a}", &tricky).unwrap(), "${params.b}");
    }
}
