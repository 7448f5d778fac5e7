//! The crate's layers: every `crate::` reference in `src/` points down the order that
//! ARCHITECTURE.md states ("Layers"), and no files reference each other in a circle.
//!
//! Every file under `src/` is parsed with `syn` (with `#[cfg(test)]` code): `use` trees with
//! nested groups, `crate::`, `super::` and `self::` paths anywhere (types, expressions,
//! patterns, attributes), bare paths through a child module (`store::Key` in `mod.rs`), and the
//! same paths inside macro calls (`format!("{}", crate::http::redact(u))`). A path is followed
//! to the file that defines its item, through `use` re-exports (`super::ControlError` reaching
//! `control/error.rs` through `control/mod.rs`'s `pub use`). A parent module's file may use its
//! own children (it declares them and is their facade); every other file-to-file reference
//! counts for the circles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proc_macro2::{TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::visit::Visit;

/// File-to-file references that are known and owned by another piece of work. Each entry is
/// `(from, to, who removes it)`; an entry whose reference is gone fails the test so the list
/// stays true.
const EXEMPT: &[(&str, &str, &str)] = &[];

/// One source file: its path from the crate root (`src/a/b.rs`) and its text.
pub struct Source {
    pub path: String,
    pub text: String,
}

#[test]
fn src_follows_the_documented_layers_without_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = documented_layers(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    assert!(
        layers.len() > 5,
        "ARCHITECTURE.md lists the layers: {layers:?}"
    );
    let mut sources = Vec::new();
    read_sources(root, &root.join("src"), &mut sources);
    assert!(sources.len() > 50, "found {} files", sources.len());
    let problems = check(&sources, &layers, EXEMPT);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The layer list between `<!-- layers -->` and `<!-- /layers -->`: one layer per line,
/// bottom first, each naming its top-level modules in backticks.
pub fn documented_layers(architecture: &str) -> Vec<Vec<String>> {
    let start = architecture
        .find("<!-- layers -->")
        .expect("ARCHITECTURE.md has <!-- layers -->");
    let end = architecture
        .find("<!-- /layers -->")
        .expect("ARCHITECTURE.md has <!-- /layers -->");
    architecture[start..end]
        .lines()
        .skip(1)
        .map(|line| {
            line.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|names| !names.is_empty())
        .collect()
}

fn read_sources(root: &Path, dir: &Path, out: &mut Vec<Source>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(Source {
                path: path.strip_prefix(root).unwrap().display().to_string(),
                text: std::fs::read_to_string(&path).unwrap(),
            });
        }
    }
}

/// Every problem: references up the layer order or within one layer, circles between files,
/// modules missing from the order, stale exemptions. Each names the file and line.
pub fn check(
    sources: &[Source],
    layers: &[Vec<String>],
    exempt: &[(&str, &str, &str)],
) -> Vec<String> {
    let crate_map = CrateMap::new(sources);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    for source in sources {
        let Some(module) = module_of(&source.path) else {
            continue;
        };
        let file = match syn::parse_file(&source.text) {
            Ok(f) => f,
            Err(e) => {
                let line = e.span().start().line;
                problems.push(format!("{}:{line}: does not parse: {e}", source.path));
                continue;
            }
        };
        let mut refs = Refs {
            map: &crate_map,
            stack: module.clone(),
            found: Vec::new(),
        };
        refs.visit_file(&file);
        for (path, line) in refs.found {
            let Some(target) = crate_map.resolve(&path, 0) else {
                continue;
            };
            if target == source.path || crate_map.is_ancestor(&source.path, &target) {
                continue;
            }
            edges.entry((source.path.clone(), target)).or_insert(line);
        }
    }
    for (from, to, who) in exempt {
        if edges.remove(&(from.to_string(), to.to_string())).is_none() {
            problems.push(format!(
                "exemption {from} -> {to} ({who}) no longer matches a reference: remove it"
            ));
        }
    }
    problems.extend(layer_problems(&edges, layers, &crate_map));
    problems.extend(circles(&edges));
    problems
}

fn layer_problems(
    edges: &BTreeMap<(String, String), usize>,
    layers: &[Vec<String>],
    crate_map: &CrateMap,
) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (n.as_str(), i)))
        .collect();
    let mut problems = Vec::new();
    for top in crate_map.top_modules() {
        if !rank.contains_key(top.as_str()) {
            problems.push(format!(
                "module `{top}` is missing from ARCHITECTURE.md's layer list"
            ));
        }
    }
    for ((from, to), line) in edges {
        let (Some(a), Some(b)) = (top_of(from), top_of(to)) else {
            continue;
        };
        if a == b {
            continue;
        }
        let (Some(&ra), Some(&rb)) = (rank.get(a.as_str()), rank.get(b.as_str())) else {
            continue;
        };
        if ra == rb {
            problems.push(format!(
                "{from}:{line}: `{a}` references `{b}` in the same layer ({}); layers hold independent modules",
                ra + 1
            ));
        } else if ra < rb {
            problems.push(format!(
                "{from}:{line}: `{a}` (layer {}) references `{b}` (layer {}) above it ({to})",
                ra + 1,
                rb + 1
            ));
        }
    }
    problems
}

/// Strongly connected components of more than one file (Tarjan), each with its references.
fn circles(edges: &BTreeMap<(String, String), usize>) -> Vec<String> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
        graph.entry(to).or_default();
    }
    let mut t = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !t.index.contains_key(node) {
            t.visit(node);
        }
    }
    t.components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let members: BTreeSet<&str> = c.iter().copied().collect();
            let refs: Vec<String> = edges
                .iter()
                .filter(|((a, b), _)| members.contains(a.as_str()) && members.contains(b.as_str()))
                .map(|((a, b), line)| format!("  {a}:{line} -> {b}"))
                .collect();
            format!(
                "circle between {}:\n{}",
                members.into_iter().collect::<Vec<_>>().join(", "),
                refs.join("\n")
            )
        })
        .collect()
}

struct Tarjan<'a> {
    graph: &'a BTreeMap<&'a str, Vec<&'a str>>,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    next: usize,
    components: Vec<Vec<&'a str>>,
}

impl<'a> Tarjan<'a> {
    fn visit(&mut self, v: &'a str) {
        self.index.insert(v, self.next);
        self.low.insert(v, self.next);
        self.next += 1;
        self.stack.push(v);
        self.on_stack.insert(v);
        for &w in &self.graph[v] {
            if !self.index.contains_key(w) {
                self.visit(w);
                let low = self.low[v].min(self.low[w]);
                self.low.insert(v, low);
            } else if self.on_stack.contains(w) {
                let low = self.low[v].min(self.index[w]);
                self.low.insert(v, low);
            }
        }
        if self.low[v] == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// The module path of a file of the library (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`);
/// `None` for the binary's `main.rs`.
fn module_of(path: &str) -> Option<Vec<String>> {
    let rel = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    if rel == "main" {
        return None;
    }
    if rel == "lib" {
        return Some(Vec::new());
    }
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

fn top_of(path: &str) -> Option<String> {
    module_of(path)?.first().cloned()
}

/// Which file holds each module, which modules exist (inline ones too), and what each file
/// imports under which name (to follow re-exports).
struct CrateMap {
    files: BTreeMap<Vec<String>, String>,
    modules: BTreeSet<Vec<String>>,
    imports: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl CrateMap {
    fn new(sources: &[Source]) -> CrateMap {
        let mut map = CrateMap {
            files: BTreeMap::new(),
            modules: BTreeSet::new(),
            imports: BTreeMap::new(),
        };
        for s in sources {
            if let Some(m) = module_of(&s.path) {
                map.modules.insert(m.clone());
                map.files.insert(m, s.path.clone());
            }
        }
        for s in sources {
            let (Some(m), Ok(file)) = (module_of(&s.path), syn::parse_file(&s.text)) else {
                continue;
            };
            let mut inline = InlineMods {
                stack: m,
                found: Vec::new(),
            };
            inline.visit_file(&file);
            map.modules.extend(inline.found);
        }
        for s in sources {
            let (Some(m), Ok(file)) = (module_of(&s.path), syn::parse_file(&s.text)) else {
                continue;
            };
            let mut imports = BTreeMap::new();
            for item in &file.items {
                if let syn::Item::Use(u) = item {
                    for (path, name) in flatten_use(&u.tree, Vec::new()) {
                        if let (Some(name), Some(abs)) = (name, map.absolute(&m, &path)) {
                            imports.insert(name, abs);
                        }
                    }
                }
            }
            map.imports.insert(s.path.clone(), imports);
        }
        map
    }

    fn top_modules(&self) -> BTreeSet<String> {
        self.files
            .keys()
            .filter_map(|m| m.first().cloned())
            .collect()
    }

    /// `path` as written in module `current`, made absolute; `None` for what is not in this
    /// crate (other crates, local names).
    fn absolute(&self, current: &[String], path: &[String]) -> Option<Vec<String>> {
        let first = path.first()?;
        match first.as_str() {
            "crate" => Some(path[1..].to_vec()),
            "self" => Some([current, &path[1..]].concat()),
            "super" => {
                let mut base = current.to_vec();
                let mut rest = path;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                Some([base.as_slice(), rest].concat())
            }
            name => {
                let child = [current, &[name.to_string()]].concat();
                self.modules
                    .contains(&child)
                    .then(|| [current, path].concat())
            }
        }
    }

    /// The file that defines what `path` names, following imports of the file it reaches.
    fn resolve(&self, path: &[String], depth: usize) -> Option<String> {
        let (len, file) = (0..=path.len())
            .rev()
            .find_map(|n| self.files.get(&path[..n]).map(|f| (n, f)))?;
        let rest = &path[len..];
        if depth < 8
            && let Some(first) = rest.first()
            && let Some(target) = self.imports.get(file).and_then(|i| i.get(first))
        {
            let next = [target.as_slice(), &rest[1..]].concat();
            if next != path {
                return self
                    .resolve(&next, depth + 1)
                    .or_else(|| Some(file.clone()));
            }
        }
        Some(file.clone())
    }

    /// Whether `parent`'s module contains `child`'s (a module's file using its own children).
    fn is_ancestor(&self, parent: &str, child: &str) -> bool {
        match (module_of(parent), module_of(child)) {
            (Some(p), Some(c)) => c.len() > p.len() && c.starts_with(&p),
            _ => false,
        }
    }
}

/// Every leaf of a `use` tree: the path and the name it is imported under (`None` for `*`).
fn flatten_use(tree: &syn::UseTree, prefix: Vec<String>) -> Vec<(Vec<String>, Option<String>)> {
    let with = |s: String| [prefix.as_slice(), &[s]].concat();
    match tree {
        syn::UseTree::Path(p) => flatten_use(&p.tree, with(p.ident.to_string())),
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                let alias = prefix.last().cloned();
                vec![(prefix, alias)]
            } else {
                vec![(with(name.clone()), Some(name))]
            }
        }
        syn::UseTree::Rename(r) => {
            let name = r.ident.to_string();
            let path = if name == "self" {
                prefix.clone()
            } else {
                with(name)
            };
            vec![(path, Some(r.rename.to_string()))]
        }
        syn::UseTree::Glob(_) => vec![(prefix, None)],
        syn::UseTree::Group(g) => g
            .items
            .iter()
            .flat_map(|t| flatten_use(t, prefix.clone()))
            .collect(),
    }
}

struct InlineMods {
    stack: Vec<String>,
    found: Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for InlineMods {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.stack.push(m.ident.to_string());
        if m.content.is_some() {
            self.found.push(self.stack.clone());
        }
        syn::visit::visit_item_mod(self, m);
        self.stack.pop();
    }
}

/// Collects every in-crate path of one file with its line, made absolute.
struct Refs<'a> {
    map: &'a CrateMap,
    stack: Vec<String>,
    found: Vec<(Vec<String>, usize)>,
}

impl Refs<'_> {
    fn add(&mut self, path: &[String], line: usize) {
        if let Some(abs) = self.map.absolute(&self.stack, path) {
            self.found.push((abs, line));
        }
    }

    /// `crate :: a :: b`, `super :: x`, `child :: y` sequences in a macro's tokens.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            if let TokenTree::Group(g) = &trees[i] {
                self.scan_tokens(g.stream());
                i += 1;
                continue;
            }
            let TokenTree::Ident(first) = &trees[i] else {
                i += 1;
                continue;
            };
            let preceded_by_colons =
                i >= 1 && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == ':');
            let mut path = vec![first.to_string()];
            let line = first.span().start().line;
            let mut j = i + 1;
            loop {
                let colons = matches!(trees.get(j), Some(TokenTree::Punct(p)) if p.as_char() == ':')
                    && matches!(trees.get(j + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':');
                match (colons, trees.get(j + 2)) {
                    (true, Some(TokenTree::Ident(next))) => {
                        path.push(next.to_string());
                        j += 3;
                    }
                    _ => break,
                }
            }
            if path.len() > 1 && !preceded_by_colons {
                self.add(&path, line);
            }
            i = j;
        }
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.stack.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.stack.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        for (path, _) in flatten_use(&u.tree, Vec::new()) {
            self.add(&path, u.span().start().line);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() && p.segments.len() > 1 {
            let path: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.add(&path, p.span().start().line);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.scan_tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

#[cfg(test)]
mod checker {
    use super::*;

    fn src(files: &[(&str, &str)]) -> Vec<Source> {
        files
            .iter()
            .map(|(p, t)| Source {
                path: p.to_string(),
                text: t.to_string(),
            })
            .collect()
    }

    fn layers(names: &[&[&str]]) -> Vec<Vec<String>> {
        names
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    const LOW: &str = "pub fn f() {}\npub struct Low;\n";

    #[test]
    fn downward_references_of_every_form_pass() {
        let files = src(&[
            ("src/lib.rs", "pub mod low;\npub mod high;\n"),
            ("src/low.rs", LOW),
            (
                "src/high.rs",
                "use crate::{low::{self, Low}};\n\
                 pub fn g() -> crate::low::Low { crate::low::f(); low::f(); Low }\n\
                 pub fn h() { let _ = format!(\"{:?}\", crate::low::f()); }\n",
            ),
        ]);
        let problems = check(&files, &layers(&[&["low"], &["high"]]), &[]);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn upward_references_are_found_in_every_form() {
        let cases = [
            "use crate::high::H;\n",
            "use crate::{x::Y, high::{H, J}};\n",
            "pub fn f() {\n    crate::high::g();\n}\n",
            "pub fn f() -> Option<crate::high::H> { None }\n",
            "pub fn f() {\n    tracing::info!(x = %crate::high::NAME);\n}\n",
            "pub fn f() {\n    let _ = vec![crate::high::NAME];\n}\n",
            "#[cfg(test)]\nmod tests {\n    use crate::high::H;\n}\n",
        ];
        for text in cases {
            let files = src(&[
                ("src/lib.rs", "pub mod low;\npub mod high;\npub mod x;\n"),
                ("src/low.rs", text),
                ("src/x.rs", "pub struct Y;\n"),
                (
                    "src/high.rs",
                    "pub struct H; pub struct J; pub const NAME: &str = \"\"; pub fn g() {}\n",
                ),
            ]);
            let problems = check(&files, &layers(&[&["low", "x"], &["high"]]), &[]);
            let line = text.lines().position(|l| l.contains("high")).unwrap() + 1;
            assert!(
                problems.iter().any(|p| p.starts_with(&format!(
                    "src/low.rs:{line}: `low` (layer 1) references `high` (layer 2) above it"
                ))),
                "{text}: {problems:?}"
            );
        }
    }

    #[test]
    fn circles_between_sibling_files_are_found_through_super_and_re_exports() {
        let files = src(&[
            ("src/lib.rs", "pub mod m;\n"),
            (
                "src/m/mod.rs",
                "mod a;\nmod b;\nmod err;\npub use err::Error;\n",
            ),
            ("src/m/err.rs", "pub struct Error;\n"),
            (
                "src/m/a.rs",
                "use super::Error;\npub const LIMIT: u64 = 1;\npub fn call() -> Result<(), Error> { Ok(()) }\n",
            ),
            (
                "src/m/b.rs",
                "use super::a::call;\npub fn go() { call().ok(); }\n",
            ),
        ]);
        let l = layers(&[&["m"]]);
        assert!(check(&files, &l, &[]).is_empty());
        let mut with_circle = files;
        with_circle[3]
            .text
            .push_str("pub fn back() {\n    super::b::go();\n}\n");
        let problems = check(&with_circle, &l, &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("circle between src/m/a.rs, src/m/b.rs:")
                && problems[0].contains("src/m/a.rs:5 -> src/m/b.rs")
                && problems[0].contains("src/m/b.rs:1 -> src/m/a.rs"),
            "{}",
            problems[0]
        );
        // An exemption takes one reference out; a stale one is reported.
        let exempt = [("src/m/a.rs", "src/m/b.rs", "someone")];
        assert!(check(&with_circle, &l, &exempt).is_empty());
        let stale = check(&with_circle[..3], &l, &exempt);
        assert!(
            stale[0].contains("exemption src/m/a.rs -> src/m/b.rs (someone) no longer matches"),
            "{stale:?}"
        );
    }

    #[test]
    fn same_layer_and_unlisted_modules_are_refused() {
        let files = src(&[
            (
                "src/lib.rs",
                "pub mod low;\npub mod peer;\npub mod extra;\n",
            ),
            ("src/low.rs", "pub fn f() {\n    crate::peer::g();\n}\n"),
            ("src/peer.rs", "pub fn g() {}\n"),
            ("src/extra.rs", ""),
        ]);
        let problems = check(&files, &layers(&[&["low", "peer"]]), &[]);
        assert!(
            problems
                .contains(&"module `extra` is missing from ARCHITECTURE.md's layer list".into())
                && problems.iter().any(|p| p
                    .starts_with("src/low.rs:2: `low` references `peer` in the same layer (1)")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_documented_list_is_read_bottom_first() {
        let md = "x\n<!-- layers -->\n1. `a`, `b`: leaves\n2. `c`\n<!-- /layers -->\n`d`\n";
        assert_eq!(documented_layers(md), layers(&[&["a", "b"], &["c"]]));
    }
}
