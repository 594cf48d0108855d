//! Just enough of PromQL's lexer to tell which metrics an expression selects: identifiers
//! that are neither functions, aggregations, keywords, label names (inside `{}` and the
//! label lists of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`) nor
//! Grafana variables (`$x`, `${x}`). Strings, numbers, durations and ranges are skipped.

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// The metric names `expr` selects, in order of appearance; an error for input this lexer
/// does not understand (an unclosed bracket or string), so nothing is skipped silently.
pub fn metric_names(expr: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '"' | '\'' | '`' => i = skip_string(&chars, i)?,
            '{' => i = skip_group(&chars, i, '{', '}')?,
            '[' => i = skip_group(&chars, i, '[', ']')?,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(&chars, i, '{', '}')?;
                } else {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers and durations (1e3, 0x1f, 5m, 1h30m).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = next_token(&chars, i);
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if let Some(open) = next.filter(|&j| chars[j] == '(') {
                        i = skip_group(&chars, open, '(', ')')?;
                    }
                } else if next.is_some_and(|j| chars[j] == '(') {
                    // A function call or an aggregation: its arguments are read on.
                } else if AGGREGATIONS.contains(&lower.as_str())
                    && next.is_some_and(|j| {
                        starts_word(&chars, j, "by") || starts_word(&chars, j, "without")
                    })
                {
                    // `sum by (x) (...)`: the label list comes next.
                } else if !KEYWORDS.contains(&lower.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    Ok(names)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn next_token(chars: &[char], mut i: usize) -> Option<usize> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    (i < chars.len()).then_some(i)
}

fn starts_word(chars: &[char], at: usize, word: &str) -> bool {
    let end = at + word.len();
    end <= chars.len()
        && chars[at..end].iter().copied().eq(word.chars())
        && !chars.get(end).copied().is_some_and(is_ident)
}

/// Index after the string starting at `start` (its quote), escapes included.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("unclosed string at {start}"))
}

/// Index after the bracket closing the one at `start`, strings inside skipped.
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> Result<usize, String> {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!("unclosed {open:?} at {start}"))
}

/// A Grafana template variable query: `label_values(selector, label)` selects from
/// `selector`; `label_values(label)` and `label_names()` select no metric; anything else
/// is PromQL.
pub fn grafana_variable_metrics(query: &str) -> Result<Vec<String>, String> {
    let q = query.trim();
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        return match args.rsplit_once(',') {
            Some((selector, _label)) => metric_names(selector),
            None => Ok(Vec::new()),
        };
    }
    if q.starts_with("label_names(") {
        return Ok(Vec::new());
    }
    metric_names(q)
}

/// Sample names a scrape of the Prometheus text (or OpenMetrics) `text` offers: every
/// sample's name, and the names each declared family's type implies even without a sample
/// yet (a labelled counter before its first increment): counters `_total`, histograms
/// `_bucket`, `_sum`, `_count`.
pub fn exported_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                let base = name.strip_suffix("_total").unwrap_or(name);
                let base = if *suffix == "_total" { base } else { name };
                names.insert(format!("{base}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}
