//! The dependency order of the library's modules, as ARCHITECTURE.md writes it, checked against every
//! `crate::` path in `src/` (in the spirit of rust-analyzer's tidy tests): a module may use only the modules
//! listed before it, so imports point one way and no cycle between modules can form.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The order, bottom first, from the `text` block that follows the "Dependency order" heading.
fn documented_order(architecture: &str) -> Vec<String> {
    let section =
        architecture.split("## Dependency order").nth(1).expect("ARCHITECTURE.md has a Dependency order section");
    let block = section.split("```text").nth(1).and_then(|b| b.split("```").next()).expect("a ```text block");
    // Each line is `layer: module module ...`; the layer name is for the reader.
    block
        .lines()
        .filter_map(|l| l.split_once(':'))
        .flat_map(|(_, mods)| mods.split_whitespace().map(str::to_owned))
        .collect()
}

/// Every `crate::<module>` a source file names, with its line, comments left out. `use crate::{a, b::c}` groups
/// name each of their top-level items.
fn crate_references(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut group: Option<usize> = None;
    let mut depth = 0usize;
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = &rest[..at];
            let prefixed = before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$');
            rest = &rest[at + "crate::".len()..];
            if prefixed {
                continue;
            }
            if let Some(inner) = rest.strip_prefix('{') {
                group = Some(n + 1);
                depth = 1;
                rest = inner;
                out.extend(group_items(&mut rest, &mut depth, n + 1));
                if depth == 0 {
                    group = None;
                }
            } else {
                out.push((n + 1, ident(rest)));
            }
        }
        if group.is_some() && !code.contains("crate::{") {
            let mut rest = code;
            out.extend(group_items(&mut rest, &mut depth, n + 1));
            if depth == 0 {
                group = None;
            }
        }
    }
    out.retain(|(_, m)| !m.is_empty() && m != "self");
    out
}

/// The top-level items of a `{...}` group from `rest` on, while the group is open (`depth` > 0).
fn group_items(rest: &mut &str, depth: &mut usize, line: usize) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut at_item_start = *depth == 1;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => *depth += 1,
            '}' => {
                *depth -= 1;
                if *depth == 0 {
                    *rest = &rest[i + 1..];
                    return out;
                }
            }
            ',' if *depth == 1 => at_item_start = true,
            c if at_item_start && (c.is_alphabetic() || c == '_') => {
                out.push((line, ident(&rest[i..])));
                at_item_start = false;
            }
            _ => {}
        }
    }
    *rest = "";
    out
}

fn ident(s: &str) -> String {
    s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// The module a file under `src/` belongs to: its first path component (`src/alert/mod.rs` → `alert`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each reference that goes up (or sideways to a module listed later), as `file:line: a -> b`.
fn upward_references(order: &[String], files: &[(String, String, String)]) -> Vec<String> {
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut out = Vec::new();
    for (module, name, source) in files {
        let Some(from) = rank(module) else { continue };
        for (line, target) in crate_references(source) {
            if target == *module {
                continue;
            }
            match rank(&target) {
                Some(to) if to < from => {}
                Some(_) => out.push(format!("{name}:{line}: {module} -> {target}")),
                // Not a module (a macro or an item at the crate root): nothing to order.
                None => {}
            }
        }
    }
    out
}

#[test]
fn modules_import_only_modules_below_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let order = documented_order(&architecture);
    let src = root.join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    // The binary (`main.rs` and its command modules) sits on top and uses the library as `trailwatch::`.
    let bin: BTreeSet<&str> = ["main", "cli"].into();
    let files: Vec<(String, String, String)> = paths
        .iter()
        .map(|p| {
            (
                module_of(&src, p),
                p.strip_prefix(root).unwrap().display().to_string(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .filter(|(m, _, _)| !bin.contains(m.as_str()) && m != "lib")
        .collect();
    let modules: BTreeSet<&str> = files.iter().map(|(m, _, _)| m.as_str()).collect();
    let listed: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let unlisted: Vec<&&str> = modules.difference(&listed).collect();
    assert!(unlisted.is_empty(), "modules missing from ARCHITECTURE.md's dependency order: {unlisted:?}");
    let gone: Vec<&&str> = listed.difference(&modules).collect();
    assert!(gone.is_empty(), "ARCHITECTURE.md's dependency order lists modules that do not exist: {gone:?}");
    assert_eq!(order.len(), listed.len(), "a module is listed twice in the dependency order");

    let upward = upward_references(&order, &files);
    assert!(upward.is_empty(), "imports against the dependency order in ARCHITECTURE.md:\n{upward:#?}");
}

/// The checker itself finds what it must: an upward import in every form a file can write it.
#[test]
fn an_upward_import_is_reported() {
    let order: Vec<String> = ["time", "parse", "alert", "pipeline"].map(String::from).into();
    let file = |module: &str, source: &str| (module.to_owned(), format!("src/{module}.rs"), source.to_owned());
    let cases = [
        ("use crate::pipeline::Worker;", 1),
        ("use crate::{time::now, pipeline::{self, run}};", 1),
        ("use crate::{\n    time::now,\n    alert::Alert,\n};", 1),
        ("fn f() { crate::alert::raise(); }", 1),
        ("// crate::pipeline in a comment\nuse crate::time::now;", 0),
        ("use crate::time::{now, Timestamp};\nuse crate::parse;", 0),
    ];
    for (source, expected) in cases {
        let found = upward_references(&order, &[file("parse", source)]);
        assert_eq!(found.len(), expected, "{source}: {found:?}");
    }
}
