//! Hostile input for the run spec parser: arbitrary text and generated
//! near-valid specs never panic it; every refusal names what to fix (a
//! field, a step, a line or a limit), and every spec it accepts holds to the
//! limits and rules.

use proptest::prelude::*;

use super::spec::{Limits, SpecError, parse};
use super::{StepKindSpec, validate_queue_name};

/// Words a refusal may point at: the spec's fields, or a place in it.
const POINTERS: &[&str] = &[
    "line",
    "step ",
    "`name`",
    "name",
    "queue",
    "run",
    "argv",
    "env",
    "workdir",
    "timeout",
    "max_attempts",
    "backoff",
    "priority",
    "approval",
    "labels",
    "steps",
    "limits.",
];

fn names_what_to_fix(e: &SpecError) -> bool {
    let text = e.to_string();
    match e {
        SpecError::TooLarge(_) => text.contains("limits."),
        SpecError::Invalid(_) => POINTERS.iter().any(|p| text.contains(p)),
    }
}

fn small_limits() -> Limits {
    Limits {
        max_spec_bytes: 4096,
        max_steps: 4,
        max_command_bytes: 64,
        max_env_entries: 3,
        max_attempts: 10,
        ..Limits::default()
    }
}

/// A TOML value as written in a spec: mostly plausible, sometimes not.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"5s\"".to_owned()),
        Just("\"soon\"".to_owned()),
        Just("\"0s\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"build\"".to_owned()),
        Just("\"Bad Queue!\"".to_owned()),
        Just("\"make build\"".to_owned()),
        Just("[\"echo\", \"hi\"]".to_owned()),
        Just("[]".to_owned()),
        Just("[\"\"]".to_owned()),
        Just("{}".to_owned()),
        Just("{ A = \"1\", B = { value = \"s\", secret = true } }".to_owned()),
        Just("{ A = \"1\", B = { secret = \"db_pass\" } }".to_owned()),
        Just("{ timeout = \"1h\", on_timeout = \"fail\", approvals = 2 }".to_owned()),
        Just("{ on_timeout = \"shrug\" }".to_owned()),
        Just("{ approvals = 0 }".to_owned()),
        (-5i64..300).prop_map(|n| n.to_string()),
        Just("true".to_owned()),
        "\"[a-zA-Z0-9 ._/-]{0,80}\"",
        "[^\\n]{0,20}",
    ]
}

fn field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "name",
        "queue",
        "run",
        "argv",
        "env",
        "workdir",
        "timeout",
        "max_attempts",
        "backoff",
        "priority",
        "approval",
        "bogus",
    ])
}

fn step() -> impl Strategy<Value = String> {
    prop::collection::vec((field(), value()), 0..6).prop_map(|fields| {
        let mut s = "[[step]]\n".to_owned();
        for (k, v) in fields {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    })
}

fn spec() -> impl Strategy<Value = String> {
    (
        prop::option::of(value()),
        prop::option::of(value()),
        prop::collection::vec(step(), 0..6),
    )
        .prop_map(|(name, labels, steps)| {
            let mut s = String::new();
            if let Some(n) = name {
                s.push_str(&format!("name = {n}\n"));
            }
            if let Some(l) = labels {
                s.push_str(&format!("labels = {l}\n"));
            }
            for st in steps {
                s.push_str(&st);
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,300}") {
        if let Err(e) = parse(&text, &Limits::default()) {
            prop_assert!(names_what_to_fix(&e), "{e}");
        }
    }

    #[test]
    fn generated_specs_are_accepted_within_the_rules_or_refused_naming_what_to_fix(text in spec()) {
        let limits = small_limits();
        match parse(&text, &limits) {
            Err(e) => prop_assert!(names_what_to_fix(&e), "{e}\n--- spec ---\n{text}"),
            Ok(spec) => {
                prop_assert!(!spec.name.is_empty() && spec.name.len() <= 128);
                prop_assert!(!spec.steps.is_empty() && spec.steps.len() <= limits.max_steps);
                let mut names = std::collections::HashSet::new();
                for s in &spec.steps {
                    prop_assert!(names.insert(s.name.clone()), "duplicate step name {}", s.name);
                    if let StepKindSpec::Exec(e) = &s.kind {
                        prop_assert!(validate_queue_name(&e.queue).is_ok());
                        prop_assert!(!e.command.is_empty() && e.command.len() <= limits.max_command_bytes);
                        prop_assert!(e.max_attempts >= 1 && e.max_attempts <= limits.max_attempts);
                        prop_assert!(e.env.len() <= limits.max_env_entries);
                        prop_assert!(e.timeout_ms.is_none_or(|t| t > 0));
                    }
                }
            }
        }
    }

    #[test]
    fn any_queue_name_is_checked_without_panicking(name in "\\PC{0,100}") {
        match validate_queue_name(&name) {
            Ok(()) => prop_assert!(name.len() <= 64 && !name.is_empty()),
            Err(e) => prop_assert!(e.contains("queue name"), "{e}"),
        }
    }
}
