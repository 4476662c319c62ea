//! docs/configuration.md and the loader's list of variables must agree.

use std::collections::BTreeMap;

use dunnage::registry::VARIABLES;

/// `name -> default cell` for every table row whose first cell is a backticked name.
fn documented() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), cells.get(2)?.to_string()))
        })
        .collect()
}

#[test]
fn every_variable_is_documented_with_its_default() {
    let docs = documented();
    for spec in VARIABLES {
        let cell = docs
            .get(spec.name)
            .unwrap_or_else(|| panic!("{} is not in docs/configuration.md", spec.name));
        let want = spec
            .default
            .map_or_else(|| "(none)".to_owned(), |d| format!("`{d}`"));
        assert_eq!(cell, &want, "documented default of {}", spec.name);
    }
}

#[test]
fn the_docs_name_no_variable_the_loader_does_not_know() {
    for name in documented().keys() {
        assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "docs/configuration.md documents {name}, which the loader does not read"
        );
    }
}

#[test]
fn secrets_are_marked_secret_in_the_docs() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    for spec in VARIABLES.iter().filter(|v| v.secret) {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", spec.name)))
            .unwrap();
        assert!(
            row.contains("Secret."),
            "{} is secret; say so in its row",
            spec.name
        );
    }
}
