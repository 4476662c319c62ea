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

/// Every Markdown and YAML file under docs/ (how-tos and manifests included), with the
/// README and the example compose file.
fn doc_files() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("compose.example.yml")];
    files.extend(
        walkdir::WalkDir::new(root.join("docs"))
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .filter(|p| p.extension().is_some_and(|x| x == "md" || x == "yaml")),
    );
    files
}

#[test]
fn variables_in_examples_and_manifests_are_ones_the_loader_reads() {
    let name = regex::Regex::new(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b").unwrap();
    // Misspellings the docs show on purpose, and names of other programs.
    const EXAMPLES: &[&str] = &[
        "BACKUP_RETENTON_DAYS",
        "AWS_S3_BUCKET",
        // Read by the AWS SDKs' container credentials, mentioned for comparison.
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ];
    let mut unknown = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for m in name.captures_iter(&text) {
            let var = &m[1];
            let base = var.strip_suffix("_FILE").unwrap_or(var);
            if !dunnage::registry::OUR_PREFIXES
                .iter()
                .any(|p| base.starts_with(p))
                || base.starts_with("DUNNAGE_TEST")
            {
                continue;
            }
            let known = [var, base]
                .iter()
                .any(|n| dunnage::registry::spec(n).is_some());
            if !known && !EXAMPLES.contains(&var) {
                unknown.push(format!("{}: {var}", file.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "names the loader does not read:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn relative_links_in_the_docs_lead_somewhere() {
    let link = regex::Regex::new(r"\]\(([^)#:]+)(#[^)]*)?\)").unwrap();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for m in link.captures_iter(&text) {
            let target = file.parent().unwrap().join(&m[1]);
            assert!(
                target.exists(),
                "{} links to {}, which does not exist",
                file.display(),
                &m[1]
            );
        }
    }
}
