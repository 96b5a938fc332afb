//! The library's modules depend on each other one way: no cycles, between modules or between the
//! top-level ones, the domain (the Incident types, the plan, the history fold, the audit event
//! types) knows nothing of the wiring, and config is a leaf. Read from the source with `syn`: every `crate::`, `super::` and `self::` path outside
//! `#[cfg(test)]` is an edge, counted against the module that defines the item (re-exports
//! followed). `cargo nextest run -E 'test(/architecture::module_map/)' --no-capture` prints the map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;
use petgraph::visit::Dfs;
use syn::visit::Visit;

/// A module's path below the crate root; the root itself is empty.
type ModulePath = Vec<String>;

/// Which module uses which, read from the library's source.
pub struct ModuleGraph {
    /// Every module of the library, each with the modules it uses.
    pub edges: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
    /// The wiring crates each module names (see [`WIRING`]).
    pub wiring: BTreeMap<ModulePath, BTreeSet<String>>,
}

/// Crates (and parts of `kube`) that reach the outside: the Kubernetes client and runtime, Docker,
/// HTTP servers and clients, databases, folder watching.
const WIRING: &[&str] = &[
    "axum",
    "bollard",
    "deadpool_postgres",
    "hyper",
    "hyper_util",
    "kube::Api",
    "kube::Client",
    "kube::api",
    "kube::client",
    "kube::runtime",
    "kube_lease_manager",
    "kube_runtime",
    "notify_debouncer_full",
    "reqwest",
    "rusqlite",
    "rusqlite_migration",
    "tokio_postgres",
];

/// What one module's source says: the paths it uses, and the names it brings in with `use`.
#[derive(Default)]
struct ModuleSource {
    used: Vec<ModulePath>,
    /// The wiring crates named (see [`WIRING`]).
    wiring: BTreeSet<String>,
    /// Names visible in the module through `use` (re-exports among them): name -> absolute path.
    aliases: BTreeMap<String, ModulePath>,
    /// Items defined in the module itself (structs, functions, inline modules ...).
    items: BTreeSet<String>,
    /// The first names of the other paths: a name a re-export brought in is used through them.
    names: BTreeSet<String>,
}

impl ModuleGraph {
    /// Reads the library from `src/lib.rs` down, following its `mod` declarations.
    pub fn of_library(src: &Path) -> ModuleGraph {
        let files = module_files(&src.join("lib.rs"), Vec::new());
        let known: BTreeSet<ModulePath> = files.iter().map(|(_, module)| module.clone()).collect();
        let mut sources: BTreeMap<ModulePath, ModuleSource> = BTreeMap::new();
        for (file, module) in &files {
            let syntax = parse(file);
            let mut reader = Reader {
                module: module.clone(),
                known: &known,
                sources: &mut sources,
            };
            reader.sources.entry(module.clone()).or_default();
            reader.visit_file(&syntax);
        }
        let modules: BTreeSet<ModulePath> = sources.keys().cloned().collect();
        let mut edges = BTreeMap::new();
        for (module, source) in &sources {
            let reexported_and_used = source
                .aliases
                .iter()
                .filter(|(alias, _)| source.names.contains(*alias))
                .map(|(_, path)| path);
            let targets: BTreeSet<ModulePath> = source
                .used
                .iter()
                .chain(reexported_and_used)
                .filter_map(|path| defining_module(path, &sources, &modules))
                .filter(|target| target != module)
                .collect();
            edges.insert(module.clone(), targets);
        }
        let wiring = sources
            .iter()
            .map(|(module, source)| (module.clone(), source.wiring.clone()))
            .collect();
        ModuleGraph { edges, wiring }
    }

    /// The same graph between the crate's top-level modules (the root's own items are `crate`).
    pub fn top_level(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, targets) in &self.edges {
            let from = top(module);
            let entry = map.entry(from.clone()).or_default();
            for target in targets {
                let to = top(target);
                if to != from {
                    entry.insert(to);
                }
            }
        }
        map
    }

    /// The groups of modules that use each other in a circle (strongly connected, two or more).
    pub fn cycles(&self) -> Vec<Vec<String>> {
        cycles_of(
            self.edges
                .iter()
                .map(|(from, to)| (name(from), to.iter().map(name).collect())),
        )
    }

    /// Cycles between the top-level modules.
    pub fn top_level_cycles(&self) -> Vec<Vec<String>> {
        cycles_of(self.top_level())
    }
}

fn cycles_of(edges: impl IntoIterator<Item = (String, BTreeSet<String>)>) -> Vec<Vec<String>> {
    let edges: Vec<(String, BTreeSet<String>)> = edges.into_iter().collect();
    let mut graph = DiGraphMap::<&str, ()>::new();
    for (from, targets) in &edges {
        graph.add_node(from);
        for to in targets {
            graph.add_edge(from, to, ());
        }
    }
    let mut cycles: Vec<Vec<String>> = tarjan_scc(&graph)
        .into_iter()
        .filter(|group| group.len() > 1)
        .map(|group| {
            let mut names: Vec<String> = group.into_iter().map(str::to_string).collect();
            names.sort();
            names
        })
        .collect();
    cycles.sort();
    cycles
}

fn name(module: &ModulePath) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

fn top(module: &ModulePath) -> String {
    module
        .first()
        .cloned()
        .unwrap_or_else(|| "crate".to_string())
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|error| panic!("read {}: {error}", file.display()));
    syn::parse_file(&text).unwrap_or_else(|error| panic!("parse {}: {error}", file.display()))
}

/// The file of `module` and those of the modules it declares with `mod name;` (test-only ones
/// left out), as rustc finds them: `name.rs` or `name/mod.rs` beside a `mod.rs` or `lib.rs`,
/// under `parent/` beside a `parent.rs`.
fn module_files(file: &Path, module: ModulePath) -> Vec<(PathBuf, ModulePath)> {
    let syntax = parse(file);
    let folder = if module.is_empty() || file.ends_with("mod.rs") {
        file.parent().expect("a folder").to_path_buf()
    } else {
        file.with_extension("")
    };
    let mut files = vec![(file.to_path_buf(), module.clone())];
    for item in &syntax.items {
        let syn::Item::Mod(declared) = item else {
            continue;
        };
        if declared.content.is_some() || is_test_only(&declared.attrs) {
            continue;
        }
        let name = declared.ident.to_string();
        let flat = folder.join(format!("{name}.rs"));
        let child_file = if flat.exists() {
            flat
        } else {
            folder.join(&name).join("mod.rs")
        };
        let mut child = module.clone();
        child.push(name);
        files.extend(module_files(&child_file, child));
    }
    files
}

/// The module that defines what `path` names: the longest known module prefix, with the names
/// that module brings in by `use` followed to where they come from.
fn defining_module(
    path: &ModulePath,
    sources: &BTreeMap<ModulePath, ModuleSource>,
    modules: &BTreeSet<ModulePath>,
) -> Option<ModulePath> {
    let mut path = path.clone();
    // A chain of re-exports is short; the bound only guards against a `use` cycle.
    for _ in 0..16 {
        let split = (0..=path.len())
            .rev()
            .find(|&len| modules.contains(&path[..len]))?;
        let (module, rest) = path.split_at(split);
        let Some(first) = rest.first() else {
            return Some(module.to_vec());
        };
        let source = &sources[module];
        if source.items.contains(first) {
            return Some(module.to_vec());
        }
        match source.aliases.get(first) {
            Some(target) if target[..] != path[..] => {
                let mut followed = target.clone();
                followed.extend(rest[1..].iter().cloned());
                path = followed;
            }
            _ => return Some(module.to_vec()),
        }
    }
    None
}

struct Reader<'a> {
    /// The module being read (inline modules push onto it).
    module: ModulePath,
    /// The modules that have a file of their own: a path may start with a child's name.
    known: &'a BTreeSet<ModulePath>,
    sources: &'a mut BTreeMap<ModulePath, ModuleSource>,
}

impl Reader<'_> {
    fn source(&mut self) -> &mut ModuleSource {
        self.sources.entry(self.module.clone()).or_default()
    }

    /// Notes a path that names a wiring crate.
    fn note_wiring(&mut self, segments: &[String]) {
        let named = |len: usize| segments.get(..len).map(|head| head.join("::"));
        for len in [1, 2] {
            if let Some(head) = named(len).filter(|head| WIRING.contains(&head.as_str())) {
                self.source().wiring.insert(head);
            }
        }
    }

    /// `crate::a::b`, `super::b`, `self::b` made absolute; None for paths outside the crate.
    fn absolute(&self, segments: &[String]) -> Option<ModulePath> {
        let first = segments.first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.clone(),
            "super" => {
                let mut base = self.module.clone();
                base.pop();
                base
            }
            // A lone name (`error` in `Some(error)`) is a binding or an imported item: a module
            // is only ever named on the way to one of its items.
            _ if segments.len() == 1 => return None,
            _ => {
                let mut child = self.module.clone();
                child.push(first.clone());
                if !self.known.contains(&child) {
                    return None;
                }
                return Some(self.module.iter().chain(segments).cloned().collect());
            }
        };
        let mut rest = &segments[1..];
        while rest.first().is_some_and(|segment| segment == "super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// Each name a `use` tree brings in, with the path it names.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, counted: bool) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree, counted);
                prefix.pop();
            }
            syn::UseTree::Name(name) => self.imported(prefix, &name.ident, &name.ident, counted),
            syn::UseTree::Rename(rename) => {
                self.imported(prefix, &rename.ident, &rename.rename, counted)
            }
            syn::UseTree::Glob(_) => match self.absolute(prefix) {
                Some(path) if counted => self.source().used.push(path),
                Some(_) => {}
                None => self.note_wiring(prefix),
            },
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree, counted);
                }
            }
        }
    }

    fn imported(
        &mut self,
        prefix: &[String],
        ident: &syn::Ident,
        alias: &syn::Ident,
        counted: bool,
    ) {
        let mut segments = prefix.to_vec();
        if ident != "self" {
            segments.push(ident.to_string());
        }
        let Some(path) = self.absolute(&segments) else {
            self.note_wiring(&segments);
            return;
        };
        let alias = if alias == "self" {
            segments.last().cloned().unwrap_or_default()
        } else {
            alias.to_string()
        };
        if counted {
            self.source().used.push(path.clone());
        }
        self.source().aliases.insert(alias, path);
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Const(item) => &item.attrs,
            syn::Item::Enum(item) => &item.attrs,
            syn::Item::Fn(item) => &item.attrs,
            syn::Item::Impl(item) => &item.attrs,
            syn::Item::Mod(item) => &item.attrs,
            syn::Item::Static(item) => &item.attrs,
            syn::Item::Struct(item) => &item.attrs,
            syn::Item::Trait(item) => &item.attrs,
            syn::Item::Type(item) => &item.attrs,
            syn::Item::Use(item) => &item.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_test_only(attrs) {
            return;
        }
        let defined = match item {
            syn::Item::Const(item) => Some(&item.ident),
            syn::Item::Enum(item) => Some(&item.ident),
            syn::Item::Fn(item) => Some(&item.sig.ident),
            syn::Item::Static(item) => Some(&item.ident),
            syn::Item::Struct(item) => Some(&item.ident),
            syn::Item::Trait(item) => Some(&item.ident),
            syn::Item::Type(item) => Some(&item.ident),
            syn::Item::Macro(item) => item.ident.as_ref(),
            _ => None,
        };
        if let Some(ident) = defined {
            self.source().items.insert(ident.to_string());
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // A module in its own file is read from that file; an inline one is read here.
        if let Some((_, items)) = &item.content {
            self.module.push(item.ident.to_string());
            self.source();
            for item in items {
                self.visit_item(item);
            }
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        // A re-export is a module's front, not a use of its own: the modules that use the name
        // are counted against where it is defined.
        let counted = matches!(item.vis, syn::Visibility::Inherited);
        self.use_tree(&mut Vec::new(), &item.tree, counted);
    }

    /// `pub(crate)` and `pub(super)` say who may use an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path
            .segments
            .iter()
            .map(|segment| segment.ident.to_string())
            .collect();
        match self.absolute(&segments) {
            Some(path) => self.source().used.push(path),
            None => {
                self.note_wiring(&segments);
                if let Some(first) = segments.first() {
                    self.source().names.insert(first.clone());
                }
            }
        }
        syn::visit::visit_path(self, path);
    }
}

impl ModuleGraph {
    /// The modules `from` uses, directly or through others (itself included).
    pub fn reach(&self, from: &str) -> BTreeSet<String> {
        let mut graph = DiGraphMap::<&str, ()>::new();
        let names: BTreeMap<&ModulePath, String> = self
            .edges
            .keys()
            .map(|module| (module, name(module)))
            .collect();
        for (module, targets) in &self.edges {
            graph.add_node(&names[module]);
            for target in targets {
                graph.add_edge(&names[module], &names[target], ());
            }
        }
        assert!(graph.contains_node(from), "no module {from}");
        let mut reached = BTreeSet::new();
        let mut walk = Dfs::new(&graph, from);
        while let Some(module) = walk.next(&graph) {
            reached.insert(module.to_string());
        }
        reached
    }

    /// The wiring crates `module` names.
    fn wiring_of(&self, module: &str) -> &BTreeSet<String> {
        let (_, wiring) = self
            .wiring
            .iter()
            .find(|(path, _)| name(path) == module)
            .unwrap_or_else(|| panic!("no module {module}"));
        wiring
    }

    /// Each module `from` reaches that names a wiring crate, with the crates it names.
    pub fn wiring_reached(&self, from: &str) -> BTreeMap<String, BTreeSet<String>> {
        self.reach(from)
            .into_iter()
            .map(|module| {
                let wiring = self.wiring_of(&module).clone();
                (module, wiring)
            })
            .filter(|(_, wiring)| !wiring.is_empty())
            .collect()
    }
}

/// The library as it is in this checkout.
fn library() -> ModuleGraph {
    ModuleGraph::of_library(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/opslab-controller/src"),
    )
}

/// The domain: what an Incident is, the reconciler's next step, a session's trail folded into a
/// conversation, the audit events, what the Docker API proxy allows.
const DOMAIN: &[&str] = &[
    "incident",
    "reconcile::plan",
    "session::history",
    "audit::event",
    "sandbox::proxy::policy",
];

#[test]
fn modules_depend_on_each_other_one_way() {
    let cycles: Vec<Vec<String>> = library().cycles();
    assert_eq!(
        cycles,
        Vec::<Vec<String>>::new(),
        "modules that use each other"
    );
}

#[test]
fn top_level_modules_depend_on_each_other_one_way() {
    // The finer graph can be free of cycles while its modules' parents use each other: a
    // component then cannot be read, or moved, without the other.
    let cycles: Vec<Vec<String>> = library().top_level_cycles();
    assert_eq!(
        cycles,
        Vec::<Vec<String>>::new(),
        "top-level modules that use each other"
    );
}

#[test]
fn the_domain_depends_on_no_wiring() {
    let graph = library();
    let found: BTreeMap<&str, BTreeMap<String, BTreeSet<String>>> = DOMAIN
        .iter()
        .map(|&module| (module, graph.wiring_reached(module)))
        .filter(|(_, reached)| !reached.is_empty())
        .collect();
    assert_eq!(
        found,
        BTreeMap::new(),
        "domain modules that reach wiring (module -> modules reached -> crates named)"
    );
}

#[test]
fn config_is_a_leaf() {
    let graph = library();
    // Config holds each component's settings, from small modules of their own: never the
    // component's wiring. One exception: a PostgreSQL store's URL is checked with the driver's
    // own parser, so that what config accepts is what the driver connects to.
    let mut reached = graph.wiring_reached("config");
    reached.remove("audit::location");
    assert_eq!(reached, BTreeMap::new(), "wiring that config reaches");
    let components: Vec<String> = graph
        .reach("config")
        .into_iter()
        .filter(|module| {
            [
                "session",
                "reconcile",
                "source",
                "server",
                "console",
                "kube_client",
            ]
            .iter()
            .any(|wiring| module == wiring || module.starts_with(&format!("{wiring}::")))
        })
        .collect();
    assert_eq!(
        components,
        Vec::<String>::new(),
        "components that config reaches"
    );
}

#[test]
fn module_map() {
    let graph = library();
    for (module, targets) in graph.top_level() {
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        println!("{module} -> {}", targets.join(" "));
    }
    println!("top-level cycles: {:?}", graph.top_level_cycles());
    println!("module cycles: {:?}", graph.cycles());
}
