//! What an offline compile reports about each resource: a table for people and CI logs, JSON
//! for tools.

use serde::Serialize;

use crate::compile::{Compiled, Kind};

/// One resource's readiness, as its `Ready` condition would show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The resource's kind.
    pub kind: &'static str,
    /// Its namespace (VirtualKeys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Whether it is in the policy.
    pub ready: bool,
    /// The condition's reason.
    pub reason: &'static str,
    /// The condition's message.
    pub message: String,
}

/// Every resource's row, sorted by kind, namespace and name.
pub fn rows(c: &Compiled) -> Vec<Row> {
    c.statuses
        .iter()
        .map(|s| Row {
            kind: s.kind.as_str(),
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            ready: s.readiness.ready,
            reason: s.readiness.reason,
            message: s.readiness.message.clone(),
        })
        .collect()
}

/// The rows as an aligned table (`KIND NAMESPACE NAME READY REASON MESSAGE`), then a summary.
pub fn table(rows: &[Row], notes: &[String]) -> String {
    let header = ["KIND", "NAMESPACE", "NAME", "READY", "REASON", "MESSAGE"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.kind.to_owned(),
                r.namespace.clone().unwrap_or_else(|| "-".into()),
                r.name.clone(),
                if r.ready { "True" } else { "False" }.to_owned(),
                r.reason.to_owned(),
                r.message.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.map(str::to_owned));
    for row in &cells {
        out.push_str(&line(row));
    }
    let not_ready = rows.iter().filter(|r| !r.ready).count();
    out.push_str(&format!(
        "\n{} resources: {} ready, {not_ready} not ready\n",
        rows.len(),
        rows.len() - not_ready
    ));
    for note in notes {
        out.push_str(note);
        out.push('\n');
    }
    out
}

/// How many resources of each kind are not ready, for a one-line summary.
pub fn not_ready_summary(c: &Compiled) -> String {
    let parts: Vec<String> = c
        .not_ready()
        .into_iter()
        .map(|(kind, n): (Kind, usize)| format!("{n} {}", kind.as_str()))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_ends_with_a_summary() {
        let rows = vec![
            Row {
                kind: "Team",
                namespace: None,
                name: "platform".into(),
                ready: true,
                reason: "Compiled",
                message: "in the policy".into(),
            },
            Row {
                kind: "VirtualKey",
                namespace: Some("team-b".into()),
                name: "mallory".into(),
                ready: false,
                reason: "NamespaceNotAllowed",
                message: "Team \"platform\" does not admit namespace \"team-b\"".into(),
            },
        ];
        let t = table(&rows, &["note".to_owned()]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "KIND        NAMESPACE  NAME      READY  REASON               MESSAGE"
        );
        assert_eq!(
            lines[1],
            "Team        -          platform  True   Compiled             in the policy"
        );
        assert!(lines[2].starts_with("VirtualKey  team-b     mallory   False  NamespaceNotAllowed  Team"));
        assert_eq!(lines[4], "2 resources: 1 ready, 1 not ready");
        assert_eq!(lines[5], "note");
    }
}
