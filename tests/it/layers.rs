//! Dependencies run one way: no cycle among the top-level modules of the
//! orchestrator's or the agent's library, read from the code itself.
//!
//! A module's edges are the `crate::X` paths in its non-test code
//! (comments, `#[cfg(test)] mod` blocks and test files left out), in
//! every file of `src/`, the binary's `main.rs` and its modules included
//! (they reach the library as `orchestrator::`/`agent::`, so a `crate::`
//! path there names one of their own). A cycle fails the test
//! unless `KNOWN` lists it (empty: there is none), and an entry there that
//! no longer stands fails it too, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles that stand today, by crate: each one sorted module names (none
/// since issue 13; an entry is a debt with a plan to remove it).
const KNOWN: &[(&str, &[&str])] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.contains("test") {
                out.push(path);
            }
        }
    }
}

/// The top-level module a file belongs to (`crate` for lib.rs/main.rs).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under src");
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    let first = first.trim_end_matches(".rs");
    match first {
        "lib" | "main" => "crate".to_owned(),
        m => m.to_owned(),
    }
}

/// `text` without `#[cfg(test)] mod x { ... }` blocks and `//` comments.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let head = after["#[cfg(test)]".len()..].trim_start();
        let head = head.strip_prefix("pub ").unwrap_or(head);
        let block = match (head.find('{'), head.find(';')) {
            (Some(brace), semi) => semi.is_none_or(|semi| brace < semi),
            (None, _) => false,
        };
        if head.starts_with("mod ") && block {
            // Skip to the block's matching brace.
            let open = after.find('{').expect("a block");
            let mut depth = 0usize;
            let mut end = after.len();
            for (i, c) in after[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &after[end..];
        } else {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
        }
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names through `crate::`.
fn references(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let after = &code[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            refs.extend(group.split(',').map(|item| ident(item.trim()).to_owned()));
        } else {
            refs.insert(ident(after).to_owned());
        }
    }
    refs.retain(|r| r.starts_with(|c: char| c.is_ascii_lowercase()));
    refs
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let from = module_of(src, &file);
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let edges = graph.entry(from.clone()).or_default();
        edges.extend(
            references(&code_only(&text))
                .into_iter()
                .filter(|r| *r != from),
        );
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.graph.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    component.insert(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

fn check(krate: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let found = cycles(&graph(&src));
    let known: Vec<BTreeSet<String>> = KNOWN
        .iter()
        .filter(|(k, _)| *k == krate)
        .map(|(_, c)| c.iter().map(|m| (*m).to_owned()).collect())
        .collect();
    for cycle in &found {
        assert!(
            known.iter().any(|k| cycle.is_subset(k)),
            "{krate}: modules {cycle:?} import each other in a cycle; \
             make the dependencies run one way"
        );
    }
    for k in &known {
        assert!(
            found.iter().any(|c| c == k),
            "{krate}: the known cycle {k:?} no longer stands as listed: \
             shrink its entry in KNOWN (tests/it/layers.rs)"
        );
    }
}

#[test]
fn the_agents_modules_depend_one_way() {
    check("agent");
}

#[test]
fn the_orchestrators_modules_depend_one_way() {
    check("orchestrator");
}

#[test]
fn a_cycle_is_found_and_comments_and_tests_do_not_count() {
    let code = code_only(
        "use crate::{b, c::x};\n// crate::d\n#[cfg(test)]\nmod tests { use crate::e; }\nfn f() { crate::g::h(); }",
    );
    let refs: Vec<_> = references(&code).into_iter().collect();
    assert_eq!(refs, ["b", "c", "g"]);
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(from.into()).or_default().insert(to.into());
        graph.entry(to.into()).or_default();
    }
    let found = cycles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], ["a", "b", "c"].map(String::from).into());
}
