//! Reading manifests for the offline commands: files, directories (walked, sorted) or `-` for
//! stdin; multi-document YAML or JSON; `List` kinds flattened.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

/// One object read from the inputs, with where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// `file` or `file#N` (N-th non-empty YAML document, from 1).
    pub source: String,
    pub value: Value,
}

#[derive(Debug, Error)]
pub enum InputError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Shape { path: String, message: String },
}

pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Document>, InputError> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| InputError::Io {
                    path: "<stdin>".into(),
                    error,
                })?;
            parse_into(&mut docs, "<stdin>", &text)?;
        } else {
            for file in files_under(path)? {
                let name = file.display().to_string();
                let text = std::fs::read_to_string(&file).map_err(|error| InputError::Io {
                    path: name.clone(),
                    error,
                })?;
                parse_into(&mut docs, &name, &text)?;
            }
        }
    }
    Ok(docs)
}

/// The files to read under `path`: itself, or a directory's YAML and JSON files, sorted.
pub fn files_under(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    let io = |error| InputError::Io {
        path: path.display().to_string(),
        error,
    };
    if !path.is_dir() {
        std::fs::metadata(path).map_err(io)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(files_under(&entry)?);
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Parses multi-document YAML (JSON is YAML too) into documents; empty documents are
/// skipped and not counted.
pub fn parse_into(docs: &mut Vec<Document>, name: &str, text: &str) -> Result<(), InputError> {
    let values = documents(name, text)?;
    for (i, value) in values.into_iter().enumerate() {
        let source = format!("{name}#{}", i + 1);
        match value {
            Value::Null => {}
            Value::Object(_) => flatten(docs, &source, value)?,
            _ => {
                return Err(InputError::Shape {
                    path: source,
                    message: "a document must be a Kubernetes object (a map)".into(),
                });
            }
        }
    }
    Ok(())
}

fn flatten(docs: &mut Vec<Document>, source: &str, value: Value) -> Result<(), InputError> {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some();
    if !is_list {
        docs.push(Document {
            source: source.to_string(),
            value,
        });
        return Ok(());
    }
    let Some(Value::Array(items)) = value.get("items") else {
        return Err(InputError::Shape {
            path: source.to_string(),
            message: "items of a List must be a list".into(),
        });
    };
    for (i, item) in items.iter().enumerate() {
        flatten(docs, &format!("{source}.items[{i}]"), item.clone())?;
    }
    Ok(())
}

pub fn kind(value: &Value) -> &str {
    value.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The documents of multi-document YAML (JSON is YAML too), parse errors with the file's
/// name and the position.
pub fn documents(name: &str, text: &str) -> Result<Vec<Value>, InputError> {
    serde_saphyr::from_multiple(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
        InputError::Parse {
            path: name.to_string(),
            line,
            column,
            // One line: the file and position are printed by us, not as a source snippet.
            message: e.without_snippet().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists_are_flattened() {
        let mut docs = Vec::new();
        let text = "kind: Pod\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- kind: ServiceAccount\n- kind: Pod\n";
        parse_into(&mut docs, "f.yaml", text).unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| kind(&d.value)).collect();
        assert_eq!(kinds, ["Pod", "ServiceAccount", "Pod"]);
        assert_eq!(docs[1].source, "f.yaml#2.items[0]");
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let mut docs = Vec::new();
        let err =
            parse_into(&mut docs, "bad.yaml", "kind: Pod\nmetadata: [unclosed\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bad.yaml:"), "{msg}");
        assert!(
            matches!(err, InputError::Parse { line, .. } if line >= 2),
            "{msg}"
        );
    }

    #[test]
    fn scalars_are_not_objects() {
        let mut docs = Vec::new();
        let err = parse_into(&mut docs, "s.yaml", "just a string\n").unwrap_err();
        assert!(err.to_string().contains("must be a Kubernetes object"));
    }
}
