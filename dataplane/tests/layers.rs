//! The layering of the data plane, checked from its sources: every `crate::`, `super::` and
//! `self::` path (and every name a `mod.rs` re-exports from a child and then uses) is an
//! edge from the module that names it to the module that defines it. The test fails when a
//! module imports from a layer above its own (see the table in `src/lib.rs`) or when
//! modules (files) depend on each other in a cycle.
//!
//! Test code (`#[cfg(test)]` modules and files) may reach any layer: it is not part of the
//! product's layering. Re-exports (`pub use`) in a `mod.rs` are the folder's table of
//! contents, not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, bottom up. Same order as the table in `src/lib.rs`.
const LAYERS: &[&str] = &[
    "config", "engine", "auth", "socketio", "ops", "cluster", "app", "applink", "api", "metrics",
    "server", "node", "cli",
];

struct Module {
    /// `engine::session` (the crate root is `crate`).
    path: String,
    /// Source with comments, strings and test code blanked out.
    code: String,
    /// True for `mod.rs` / `lib.rs`: a folder's module, whose children are its files.
    folder: bool,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_path(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_string()
    } else {
        parts.join("::")
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Blanks comments and string/char literals (keeping line structure), so that paths in docs
/// and messages are not taken for imports.
fn strip_comments_and_strings(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b[i + 1..].starts_with(b"\"") || b[i + 1..].starts_with(b"#")) {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                j += 1;
                while j < b.len() && !b[j..].starts_with(&close) {
                    if b[j] == b'\n' {
                        out.push('\n');
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j + close.len();
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
        } else if b[i] == b'\''
            && i + 2 < b.len()
            && (b[i + 2] == b'\'' || (b[i + 1] == b'\\' && b[i + 3..].contains(&b'\'')))
        {
            // A char literal (not a lifetime).
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push_str("' '");
            i += 1;
        } else {
            let len = src[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&src[i..i + len]);
            i += len;
        }
    }
    out
}

/// Removes `#[cfg(test)]` items (a module block, or a `mod x;` line), returning the code and
/// the names of test-only file modules declared here.
fn strip_test_code(code: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_files = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let item_end = match (trimmed.find(';'), trimmed.find('{')) {
            (Some(semi), brace) if brace.is_none_or(|b| semi < b) => {
                let decl = trimmed[..semi].trim();
                if let Some(name) = decl.strip_prefix("mod ") {
                    test_files.push(name.trim().to_string());
                }
                after.len() - trimmed.len() + semi + 1
            }
            (_, Some(brace)) => {
                let mut depth = 0;
                let mut end = trimmed.len();
                for (i, c) in trimmed[brace..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = brace + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                after.len() - trimmed.len() + end
            }
            _ => after.len(),
        };
        rest = &after[item_end..];
    }
    out.push_str(rest);
    (out, test_files)
}

fn load() -> Vec<Module> {
    let root = src_dir();
    let mut files = Vec::new();
    collect(&root, &mut files);
    let mut modules = Vec::new();
    let mut test_only = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap();
        if rel == Path::new("main.rs") {
            continue;
        }
        let path = module_path(rel);
        let raw = std::fs::read_to_string(file).unwrap();
        let (code, tests) = strip_test_code(&strip_comments_and_strings(&raw));
        let folder = matches!(
            rel.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs")
        );
        for name in tests {
            let child = if path == "crate" {
                name
            } else if folder {
                format!("{path}::{name}")
            } else {
                // A file module's child lives in a folder of its name.
                format!("{path}::{name}")
            };
            test_only.insert(child);
        }
        modules.push(Module { path, code, folder });
    }
    modules.retain(|m| {
        !test_only
            .iter()
            .any(|t| m.path == *t || m.path.starts_with(&format!("{t}::")))
    });
    modules
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `crate`, `super` or `self`, with `use` groups expanded:
/// `use crate::{a::b, c}` gives `crate::a::b` and `crate::c`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let at_word = i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':';
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|h| rest.starts_with(h));
        match head {
            Some(h) if at_word => {
                let (list, end) = parse_path(&chars, i);
                found.extend(list);
                i = end.max(i + h.len());
            }
            _ => i += 1,
        }
    }
    found
}

/// Parses a path (with nested `{...}` groups) starting at `i`; returns the expanded paths
/// and where parsing stopped.
fn parse_path(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix: Vec<String> = Vec::new();
    loop {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        if i > start {
            prefix.push(chars[start..i].iter().collect());
        }
        let ws = |mut j: usize| {
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            j
        };
        let j = ws(i);
        if chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
            i = ws(j + 2);
            if chars.get(i) == Some(&'{') {
                let mut out = Vec::new();
                i += 1;
                loop {
                    i = ws(i);
                    match chars.get(i) {
                        Some('}') => {
                            i += 1;
                            break;
                        }
                        Some(',') => i += 1,
                        Some(_) => {
                            let (inner, end) = parse_path(chars, i);
                            for p in inner {
                                let mut full = prefix.clone();
                                full.extend(p);
                                out.push(full);
                            }
                            if end == i {
                                i += 1;
                            } else {
                                i = end;
                            }
                        }
                        None => break,
                    }
                }
                return (out, i);
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

struct Graph {
    modules: BTreeSet<String>,
    /// `(folder module, exported name) -> defining module`, from `pub use` in folders.
    reexports: BTreeMap<(String, String), String>,
}

impl Graph {
    /// The module a path names: its longest prefix that is a module, followed through one
    /// re-export of the next segment.
    fn resolve(&self, from: &str, path: &[String]) -> Option<String> {
        let mut segs: Vec<String> = Vec::new();
        let mut rest = path;
        let base: Vec<String> = match path.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("self") => split(from),
            Some("super") => {
                let mut base = split(from);
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                segs.extend(base);
                return self.longest(&segs, rest);
            }
            _ => return None,
        };
        rest = &rest[1..];
        segs.extend(base);
        self.longest(&segs, rest)
    }

    fn longest(&self, base: &[String], rest: &[String]) -> Option<String> {
        let mut best: Option<(String, usize)> = None;
        for k in 0..=rest.len() {
            let mut segs = base.to_vec();
            segs.extend(rest[..k].iter().cloned());
            let name = join(&segs);
            if self.modules.contains(&name) {
                best = Some((name, k));
            }
        }
        let (module, k) = best?;
        if let Some(next) = rest.get(k) {
            if let Some(target) = self.reexports.get(&(module.clone(), next.clone())) {
                return Some(target.clone());
            }
        }
        Some(module)
    }
}

fn split(path: &str) -> Vec<String> {
    if path == "crate" {
        Vec::new()
    } else {
        path.split("::").map(str::to_string).collect()
    }
}

fn join(segs: &[String]) -> String {
    if segs.is_empty() {
        "crate".to_string()
    } else {
        segs.join("::")
    }
}

fn top(path: &str) -> &str {
    path.split("::").next().unwrap_or(path)
}

/// True for the lines of a folder module that only declare or re-export children.
fn is_facade_line(line: &str) -> bool {
    let t = line.trim_start();
    let t = t
        .strip_prefix("pub(crate) ")
        .or_else(|| t.strip_prefix("pub(super) "))
        .or_else(|| t.strip_prefix("pub "))
        .unwrap_or(t);
    (t.starts_with("mod ") && t.trim_end().ends_with(';'))
        || (line.trim_start().starts_with("pub") && t.starts_with("use "))
}

fn edges(modules: &[Module]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = Graph {
        modules: modules.iter().map(|m| m.path.clone()).collect(),
        reexports: BTreeMap::new(),
    };
    graph.modules.insert("config".to_string());
    // Re-exports of folders: `pub use child::{A, b::C}` (relative, or through self::).
    for m in modules.iter().filter(|m| m.folder) {
        for statement in m.code.split(';') {
            let s = statement.trim();
            let Some(body) = s
                .strip_prefix("pub use ")
                .or_else(|| s.strip_prefix("pub(crate) use "))
            else {
                continue;
            };
            let body = body.trim_start_matches("self::");
            if body.starts_with("crate::") || body.starts_with("super::") {
                continue;
            }
            let chars: Vec<char> = body.chars().collect();
            for p in parse_path(&chars, 0).0 {
                let mut full = split(&m.path);
                full.extend(p.iter().cloned());
                let Some(last) = p.last() else { continue };
                let name = last.clone();
                if let Some(target) = graph.longest(&[], &full) {
                    if target != m.path {
                        graph.reexports.insert((m.path.clone(), name), target);
                    }
                }
            }
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in modules {
        let code: String = if m.folder {
            m.code
                .lines()
                .filter(|l| !is_facade_line(l))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            m.code.clone()
        };
        let deps = out.entry(m.path.clone()).or_default();
        for p in paths(&code) {
            if let Some(target) = graph.resolve(&m.path, &p) {
                let child_of_self = target.starts_with(&format!("{}::", m.path))
                    || (m.path == "crate" && target != "crate");
                let is_self = target == m.path;
                // A folder naming its own child through `self::child` is a real use.
                if !is_self && (!child_of_self || p.first().map(String::as_str) == Some("self")) {
                    deps.insert(target);
                }
            }
        }
        // A folder's code using a name it re-exports from a child, or a child by name.
        if m.folder {
            for ((folder, name), target) in &graph.reexports {
                // A type is named as a word; a module or function by `name::` or `name(`
                // (a bare lowercase word is as likely a field or a local of that name).
                let used = if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    contains_word(&code, name)
                } else {
                    contains_word(&code, &format!("{name}::"))
                        || contains_word(&code, &format!("{name}("))
                };
                if folder == &m.path && used {
                    deps.insert(target.clone());
                }
            }
            for child in graph.modules.iter().filter(|c| {
                c.strip_prefix(&format!("{}::", m.path))
                    .is_some_and(|rest| !rest.contains("::"))
            }) {
                let name = child.rsplit("::").next().unwrap_or(child);
                if contains_word(&code, &format!("{name}::")) {
                    deps.insert(child.clone());
                }
            }
        }
    }
    out
}

fn contains_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(|c| is_ident(c) || c == ':')
            && (!word.ends_with(is_ident) || !after.is_some_and(is_ident))
    })
}

fn layer(path: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == top(path))
}

#[test]
fn no_module_imports_from_a_layer_above() {
    let modules = load();
    let graph = edges(&modules);
    let mut bad = Vec::new();
    for (from, deps) in &graph {
        if from == "crate" {
            continue;
        }
        let Some(own) = layer(from) else {
            bad.push(format!("{from}: top-level module missing from LAYERS"));
            continue;
        };
        for to in deps {
            match layer(to) {
                Some(l) if l > own => bad.push(format!("{from} -> {to}")),
                Some(_) => {}
                None => bad.push(format!("{from} -> {to}: not in LAYERS")),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports from a higher layer:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn modules_do_not_depend_on_each_other_in_cycles() {
    let modules = load();
    let graph = edges(&modules);
    let cycles = strongly_connected(&graph);
    let shown: Vec<String> = cycles
        .iter()
        .map(|c| {
            let mut lines = vec![c.join(", ")];
            for from in c {
                for to in graph.get(from).into_iter().flatten() {
                    if c.contains(to) {
                        lines.push(format!("    {from} -> {to}"));
                    }
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", shown.join("\n"));
}

/// The graph finds edges it must find (so the checks above cannot pass by seeing nothing).
#[test]
fn the_graph_sees_known_imports() {
    let graph = edges(&load());
    let has = |from: &str, to: &str| graph.get(from).is_some_and(|d| d.contains(to));
    assert!(has("socketio::namespace", "socketio::socket"));
    assert!(
        has("socketio::socket", "engine::session"),
        "through a re-export"
    );
    assert!(has("api", "ops"));
    assert!(graph.len() > 40, "{} modules", graph.len());
}

/// Tarjan's algorithm; only components of more than one module are returned.
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn parser_expands_use_groups_and_skips_test_code() {
    let code = "use crate::{a::b, c::{d, e::F}};\nfn f() { super::g::h(); }\n#[cfg(test)]\nmod tests { use crate::z; }\n";
    let (code, _) = strip_test_code(&strip_comments_and_strings(code));
    let found: Vec<String> = paths(&code).into_iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "crate::a::b",
            "crate::c::d",
            "crate::c::e::F",
            "super::g::h"
        ]
    );
    let code = strip_comments_and_strings("// crate::x\nlet s = \"crate::y\"; let c = '\"';");
    assert!(paths(&code).is_empty(), "{code}");
}
