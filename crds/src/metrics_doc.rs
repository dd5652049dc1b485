//! The metric reference in `docs/operations.md`, read back so each binary's tests can check that
//! the page documents exactly the metrics the binary exports, with their types. The page is
//! written by hand; these checks keep it from drifting.

use std::collections::BTreeMap;

/// The metric families in a text exposition, by sample name (counters with their `_total`
/// suffix), with their type.
pub fn exported(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            let name = match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                _ => name.to_string(),
            };
            Some((name, kind.to_string()))
        })
        .collect()
}

/// The metrics documented in the table under the Markdown heading `heading` (a row's first cell
/// is the name in backticks, the second its type), up to the next heading.
pub fn documented(markdown: &str, heading: &str) -> BTreeMap<String, String> {
    markdown
        .lines()
        .skip_while(|line| line.trim() != heading)
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            Some((name.to_string(), kind.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples() {
        let text = "# HELP x_a A.\n# TYPE x_a counter\nx_a_total 1\n# TYPE x_b gauge\n\
                    # TYPE x_c histogram\n";
        let found = exported(text);
        assert_eq!(found["x_a_total"], "counter");
        assert_eq!(found["x_b"], "gauge");
        assert_eq!(found["x_c"], "histogram");
    }

    #[test]
    fn reads_one_table() {
        let page = "## A\n| Metric | Type |\n| --- | --- |\n| `a_total` | counter | x |\n\
                    ### B\n| `b` | gauge |\n";
        let table = documented(page, "## A");
        assert_eq!(table.len(), 1);
        assert_eq!(table["a_total"], "counter");
    }
}
