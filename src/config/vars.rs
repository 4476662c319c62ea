//! Raw settings and where each came from: the process environment, a conf.d file, or a
//! `K_FILE` secret file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::Problem;
use crate::registry;

/// Where a value came from (shown by print-config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Env,
    /// A line of a conf.d file.
    ConfFile(PathBuf),
    /// The contents of the file named by `K_FILE`.
    SecretFile(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env => f.write_str("environment"),
            Origin::ConfFile(p) => write!(f, "{}", p.display()),
            Origin::SecretFile(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// A set of settings (one schedule's), each with its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    map: BTreeMap<String, (String, Origin)>,
    /// Names whose value is not UTF-8: reported (for our variables), never silently unset.
    not_utf8: Vec<String>,
}

impl Vars {
    /// The process environment. A value that is not UTF-8 is left out and its name kept in
    /// [`Vars::not_utf8`], so validation can name it instead of applying the default.
    pub fn from_env() -> Self {
        let mut not_utf8 = Vec::new();
        let pairs: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let k = k.into_string().ok()?;
                match v.into_string() {
                    Ok(v) => Some((k, v)),
                    Err(_) => {
                        not_utf8.push(k);
                        None
                    }
                }
            })
            .collect();
        let mut vars = Self::from_pairs(pairs);
        vars.not_utf8 = not_utf8;
        vars
    }

    /// Variables whose value is not UTF-8.
    pub fn not_utf8(&self) -> &[String] {
        &self.not_utf8
    }

    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            map: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), (v.into(), Origin::Env)))
                .collect(),
            not_utf8: Vec::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|(v, _)| v.as_str())
    }

    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.map.get(key).map(|(_, o)| o)
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>, origin: Origin) {
        self.map.insert(key.into(), (value.into(), origin));
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// These settings with the lines of the conf.d file `path` applied on top.
    pub fn with_conf_file(&self, path: &Path) -> Result<Vars, Problem> {
        let text = std::fs::read_to_string(path).map_err(|e| Problem {
            var: path.display().to_string(),
            value: String::new(),
            message: format!("cannot read this conf.d file: {e}"),
        })?;
        let mut vars = self.clone();
        for (no, line) in text.lines().enumerate() {
            let Some(parsed) = parse_line(line, &vars) else {
                continue;
            };
            let (key, value) = parsed.map_err(|why| Problem {
                var: format!("{}:{}", path.display(), no + 1),
                // Only the key: the value may be a secret (any key may be a misspelt one).
                value: match line.split_once('=') {
                    Some((key, _)) => format!("{}=(not shown)", key.trim()),
                    None => "(not shown)".into(),
                },
                message: why,
            })?;
            vars.set(key, value, Origin::ConfFile(path.to_path_buf()));
        }
        Ok(vars)
    }

    /// Replaces every known `K_FILE` by `K` read from that file (one trailing newline
    /// trimmed). Both set, or a file that cannot be read, is a problem naming the variable:
    /// the reference silently treats such a key as unset, which turns a missing
    /// `GPG_PASSPHRASE_FILE` into unencrypted backups.
    pub fn resolve_files(&mut self, problems: &mut Vec<Problem>) {
        let file_keys: Vec<String> = self
            .map
            .keys()
            .filter(|k| {
                k.strip_suffix("_FILE")
                    .is_some_and(|base| registry::spec(base).is_some())
            })
            .cloned()
            .collect();
        for file_key in file_keys {
            let base = file_key.trim_end_matches("_FILE").to_owned();
            let (path, _) = self.map.remove(&file_key).expect("listed above");
            if self.map.contains_key(&base) {
                problems.push(Problem::new(
                    &file_key,
                    &path,
                    format!("{base} is set as well; set only one of {base} and {file_key}"),
                ));
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(mut value) => {
                    if value.ends_with('\n') {
                        value.pop();
                        if value.ends_with('\r') {
                            value.pop();
                        }
                    }
                    if value.is_empty() {
                        // An empty secret is a mistake (a file not yet written, a wrong
                        // mount), never "no secret".
                        problems.push(Problem::new(&file_key, &path, "the file is empty"));
                        continue;
                    }
                    self.set(base, value, Origin::SecretFile(PathBuf::from(path)));
                }
                Err(e) => problems.push(Problem::new(
                    &file_key,
                    &path,
                    format!("cannot read the file: {e}"),
                )),
            }
        }
    }
}

/// One conf.d line: `None` for blank and comment lines, else `KEY=VALUE` after expansion.
/// Values follow dotenv quoting: `"..."` with `\n`, `\"`, `\\` escapes, `'...'` literal,
/// unquoted values end at ` #` and are trimmed. An `export ` prefix is accepted.
fn parse_line(line: &str, vars: &Vars) -> Option<Result<(String, String), String>> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let expanded = expand_vars(trimmed, vars);
    let body = expanded.strip_prefix("export ").unwrap_or(&expanded);
    let Some((key, raw)) = body.split_once('=') else {
        return Some(Err("expected KEY=VALUE".into()));
    };
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some(Err(format!("{key:?} is not a variable name")));
    }
    let raw = raw.trim();
    let value = if let Some(rest) = raw.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        let mut closed = false;
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    closed = true;
                    break;
                }
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        if !closed {
            return Some(Err("unterminated double quote".into()));
        }
        out
    } else if let Some(rest) = raw.strip_prefix('\'') {
        match rest.find('\'') {
            Some(end) => rest[..end].to_owned(),
            None => return Some(Err("unterminated single quote".into())),
        }
    } else {
        let cut = raw.find(" #").unwrap_or(raw.len());
        raw[..cut].trim_end().to_owned()
    };
    Some(Ok((key.to_owned(), value)))
}

/// Expands `$VAR`, `${VAR}` and `${VAR:-default}` against `vars`, like Go's `os.ExpandEnv`
/// (which the reference uses): unset variables become empty, a `$` not followed by a name
/// is kept as it is.
pub fn expand_vars(input: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            if let Some(end) = braced.find('}') {
                let inner = &braced[..end];
                let value = match inner.split_once(":-") {
                    Some((name, default)) => {
                        vars.get(name).filter(|v| !v.is_empty()).unwrap_or(default)
                    }
                    None => vars.get(inner).unwrap_or(""),
                };
                out.push_str(value);
                rest = &braced[end + 1..];
                continue;
            }
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len == 0 {
            out.push('$');
        } else {
            out.push_str(vars.get(&after[..len]).unwrap_or(""));
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn expansion_follows_go_expandenv() {
        let v = vars(&[("A", "1"), ("B_2", "two"), ("EMPTY", "")]);
        assert_eq!(expand_vars("x-$A-${B_2}-$MISSING-$", &v), "x-1-two--$");
        assert_eq!(expand_vars("$A$A", &v), "11");
        assert_eq!(expand_vars("${A", &v), "${A");
        assert_eq!(expand_vars("100$ off", &v), "100$ off");
        assert_eq!(expand_vars("${NOPE:-fallback}/${A:-x}", &v), "fallback/1");
        assert_eq!(expand_vars("${EMPTY:-used}", &v), "used");
    }

    #[test]
    fn conf_lines_parse_like_dotenv() {
        let env = vars(&[("HOME_DIR", "/data"), ("NAME", "shop")]);
        let ok = |line: &str| parse_line(line, &env).unwrap().unwrap();
        assert_eq!(ok("A=b"), ("A".into(), "b".into()));
        assert_eq!(ok("export A = b "), ("A".into(), "b".into()));
        assert_eq!(ok("A=b # comment"), ("A".into(), "b".into()));
        assert_eq!(ok("A=b#notacomment"), ("A".into(), "b#notacomment".into()));
        assert_eq!(
            ok(r#"A="x # y\n\"q\"""#),
            ("A".into(), "x # y\n\"q\"".into())
        );
        assert_eq!(ok("A='lit $ \\n'"), ("A".into(), "lit $ \\n".into()));
        assert_eq!(
            ok("SRC=${HOME_DIR}/$NAME"),
            ("SRC".into(), "/data/shop".into())
        );
        assert_eq!(ok("X=${UNSET:-dflt}"), ("X".into(), "dflt".into()));
        assert_eq!(ok("EMPTY="), ("EMPTY".into(), "".into()));
        assert!(parse_line("   ", &env).is_none());
        assert!(parse_line("# A=b", &env).is_none());
        assert!(parse_line("no equals sign", &env).unwrap().is_err());
        assert!(parse_line("BAD KEY=x", &env).unwrap().is_err());
        assert!(parse_line("A=\"open", &env).unwrap().is_err());
    }

    #[test]
    fn conf_files_see_earlier_lines_and_override_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-app.env");
        std::fs::write(
            &path,
            "# app\nAPP=shop\nBACKUP_SOURCES=/data/$APP\nBACKUP_COMPRESSION=zst\n",
        )
        .unwrap();
        let env = vars(&[("BACKUP_COMPRESSION", "gz"), ("TZ", "UTC")]);
        let v = env.with_conf_file(&path).unwrap();
        assert_eq!(v.get("BACKUP_SOURCES"), Some("/data/shop"));
        assert_eq!(v.get("BACKUP_COMPRESSION"), Some("zst"));
        assert_eq!(v.get("TZ"), Some("UTC"));
        assert_eq!(
            v.origin("BACKUP_COMPRESSION"),
            Some(&Origin::ConfFile(path.clone()))
        );
        assert_eq!(v.origin("TZ"), Some(&Origin::Env));

        std::fs::write(&path, "A=1\nthis is wrong\n").unwrap();
        let p = env.with_conf_file(&path).unwrap_err();
        assert!(p.var.ends_with("10-app.env:2"), "{p}");
    }

    #[test]
    fn secret_files_are_strict() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("pass");
        std::fs::write(&good, "s3cret\n").unwrap();
        let missing = dir.path().join("missing");
        let mut v = vars(&[
            ("AWS_SECRET_ACCESS_KEY_FILE", good.to_str().unwrap()),
            ("GPG_PASSPHRASE_FILE", missing.to_str().unwrap()),
            ("WEBDAV_PASSWORD", "x"),
            ("WEBDAV_PASSWORD_FILE", good.to_str().unwrap()),
            ("SOMETHING_ELSE_FILE", "/not/ours"),
        ]);
        let mut problems = Vec::new();
        v.resolve_files(&mut problems);
        assert_eq!(v.get("AWS_SECRET_ACCESS_KEY"), Some("s3cret"));
        assert_eq!(
            v.origin("AWS_SECRET_ACCESS_KEY"),
            Some(&Origin::SecretFile(good))
        );
        assert_eq!(v.get("SOMETHING_ELSE_FILE"), Some("/not/ours"));
        let named: Vec<_> = problems.iter().map(|p| p.var.as_str()).collect();
        assert_eq!(named, ["GPG_PASSPHRASE_FILE", "WEBDAV_PASSWORD_FILE"]);
        assert!(problems[0].message.contains("cannot read the file"));
        assert!(problems[1].message.contains("set only one"));
    }
}
