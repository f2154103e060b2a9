//! The shape of the code, checked: the top-level modules depend on each
//! other in one direction only (no cycles), and the `//! # Layout` map in
//! `src/lib.rs` names every module there is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a file belongs to (`src/api/uploads.rs` -> `api`);
/// `None` for the crate root and the binary.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The code of a file without its comments (doc links are not dependencies).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named by `crate::x` paths in `code`, braces included
/// (`use crate::{a, b::c}` names `a` and `b`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: the first identifier after `{`
            // and after each comma at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

/// Module -> the other top-level modules it uses.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src()) {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let used = graph.entry(module.clone()).or_default();
        used.extend(
            crate_paths(&code(&text))
                .into_iter()
                .filter(|m| *m != module),
        );
    }
    graph
}

/// A cycle through `node`, if there is one, as the path that closes it.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| n == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(cycle) = cycle_from(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_module_graph_has_no_cycles() {
    let graph = dependencies();
    assert!(graph.len() > 5, "{graph:?}");
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, node, &mut Vec::new(), &mut done) {
            panic!(
                "module cycle: {}\nwhole graph: {graph:#?}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let found = crate_paths("use crate::{a::b, c, d::{e, f}};\nlet x = crate::g::h();");
    assert_eq!(
        found,
        ["a", "c", "d", "g"].map(String::from).into_iter().collect()
    );
    // A cycle is found where there is one.
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("x", vec!["y"]), ("y", vec!["z"]), ("z", vec!["x"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
            .collect();
    let cycle = cycle_from(&graph, "x", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(cycle.unwrap(), ["x", "y", "z", "x"]);
}

#[test]
fn the_layout_map_names_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let on_disk: BTreeSet<String> = rust_files(&src())
        .iter()
        .filter_map(|f| module_of(f))
        .collect();
    assert_eq!(
        declared, on_disk,
        "lib.rs declares other modules than src/ holds"
    );
    let map: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    for module in &declared {
        let named = map.contains(&format!("[`{module}`]")) || map.contains(&format!("`{module}`"));
        assert!(named, "the layout map in lib.rs does not name `{module}`");
    }
}
