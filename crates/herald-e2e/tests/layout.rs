//! What the workspace's layout promises.
//!
//! The domain crate has no runtime, and the fuzz targets build against it
//! alone: checked on the manifests (building the fuzz crate needs nightly
//! and libFuzzer's C++ toolchain, which a fresh machine lacks). The NATS
//! crate talks only to NATS, and the edge's lean connection needs only it:
//! checked on the manifests too.
//!
//! No module imports another that imports it back, in any crate: a cycle
//! means neither can be read, tested or moved without the other.
//!
//! Each crate's modules are its `src` files, nested ones included
//! (`src/a/b.rs` is `a::b`); a module refers to another when its code (not
//! its comments or its `tests` module) names a path through it,
//! `crate::a::b::Item` (also inside `crate::{…}`) or `super::b` from a
//! nested file, the deepest module on the path counting; naming an item of
//! the crate root (`crate::Item`) refers to the root. Doc links
//! are comments, so they do not count. A binary beside a library is a crate
//! of its own and names the library by its crate name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The `[dependencies]` table of a manifest: the names it lists.
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let table = text
        .split("\n[dependencies]\n")
        .nth(1)
        .expect("a [dependencies] table");
    let table = table.split("\n[").next().unwrap();
    table
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.trim()))
        .map(|name| name.trim_end_matches(".workspace").to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn the_domain_crate_has_no_runtime_and_the_fuzz_targets_use_only_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let domain = dependencies(&root.join("crates/herald-domain/Cargo.toml"));
    assert!(domain.contains(&"serde".to_owned()), "{domain:?}");
    for runtime in [
        "tokio",
        "hyper",
        "tonic",
        "async-nats",
        "opentelemetry",
        "herald-core",
    ] {
        assert!(
            !domain.iter().any(|d| d.starts_with(runtime)),
            "herald-domain depends on {runtime}: {domain:?}"
        );
    }
    let fuzz = dependencies(&root.join("fuzz/Cargo.toml"));
    let herald: Vec<&String> = fuzz.iter().filter(|d| d.starts_with("herald-")).collect();
    assert_eq!(herald, ["herald-domain"], "{fuzz:?}");
}

/// herald-nats holds what only talks to NATS: no gRPC, HTTP server,
/// OpenTelemetry or metrics library, and of Herald's crates only the
/// domain, so herald-core (which serves, traces and measures) builds on it
/// and never the other way. herald-subscriptions, the edge's lean
/// connection, logs in through herald-nats alone.
#[test]
fn the_nats_crate_talks_only_to_nats_and_the_lean_connection_needs_only_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let nats = dependencies(&root.join("crates/herald-nats/Cargo.toml"));
    assert!(nats.contains(&"async-nats".to_owned()), "{nats:?}");
    for server in [
        "tonic",
        "hyper",
        "http-body",
        "opentelemetry",
        "tracing-opentelemetry",
        "tracing-subscriber",
        "prometheus",
    ] {
        assert!(
            !nats.iter().any(|d| d.starts_with(server)),
            "herald-nats depends on {server}: {nats:?}"
        );
    }
    let herald: Vec<&String> = nats.iter().filter(|d| d.starts_with("herald-")).collect();
    assert_eq!(herald, ["herald-domain"], "{nats:?}");
    let core = dependencies(&root.join("crates/herald-core/Cargo.toml"));
    assert!(core.contains(&"herald-nats".to_owned()), "{core:?}");
    let subscriptions = dependencies(&root.join("crates/herald-subscriptions/Cargo.toml"));
    assert!(
        subscriptions.contains(&"herald-nats".to_owned()),
        "{subscriptions:?}"
    );
    assert!(
        !subscriptions.contains(&"herald-core".to_owned()),
        "herald-subscriptions depends on herald-core: {subscriptions:?}"
    );
}

#[test]
fn no_crate_has_a_module_cycle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cycles = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = graph(&src);
        checked += graph.len();
        if let Some(cycle) = find_cycle(&graph) {
            cycles.push(format!("{}: {}", src.display(), cycle.join(" -> ")));
        }
    }
    assert!(checked > 100, "only {checked} modules found");
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_is_found() {
    let mut graph = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge(&mut graph, "server", "events");
    edge(&mut graph, "events", "error");
    assert_eq!(find_cycle(&graph), None);
    edge(&mut graph, "error", "server");
    let cycle = find_cycle(&graph).unwrap();
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    let refs = references(&code_of(
        "use crate::{a::X, b};\n// crate::c\nlet x = crate::d::e::f();",
    ));
    assert_eq!(refs, ["a::X", "b", "d::e::f"].map(String::from).into());
}

/// Module name (`a` or `a::b`) to the modules of the crate it refers to.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // With a library, `main.rs` is the root of another crate (the binary).
    let library = src.join("lib.rs").exists();
    let names: BTreeMap<String, PathBuf> = files
        .into_iter()
        .filter(|path| !(library && path.ends_with("main.rs")))
        .map(|path| (module_name(src, &path), path))
        .collect();
    let mut graph = Graph::new();
    for (name, path) in &names {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        let parent = name.rsplit_once("::").map(|(p, _)| p);
        // A path names the deepest module it passes through; one that
        // passes through none names an item of the crate root.
        let module = |path: &str| {
            let segments: Vec<&str> = path.split("::").collect();
            (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|prefix| names.contains_key(prefix))
                .unwrap_or_default()
        };
        let mut refs: BTreeSet<String> = references(&code).iter().map(|r| module(r)).collect();
        if let Some(parent) = parent {
            for r in after(&code, "super::") {
                refs.insert(module(&format!("{parent}::{r}")));
            }
        }
        let top = name.split("::").next().unwrap();
        refs.retain(|r| r != name && r != top && names.contains_key(r));
        graph.insert(name.clone(), refs);
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` is `a::b`; `src/a/mod.rs` is `a`; `lib.rs` (or `main.rs`)
/// is the root, named "".
fn module_name(src: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The file's code: without comment lines and without its `tests` module.
fn code_of(text: &str) -> String {
    let text = text
        .split_once("#[cfg(test)]\nmod tests")
        .map_or(text, |(code, _)| code);
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths `code` names through `crate::` (`a::b::Item`).
fn references(code: &str) -> BTreeSet<String> {
    let mut refs: BTreeSet<String> = after(code, "crate::").into_iter().collect();
    for group in code.split("crate::{").skip(1) {
        let group = group.split('}').next().unwrap_or_default();
        for item in group.split(',') {
            let path = item.trim().split(['{', ' ']).next().unwrap_or_default();
            let path = path.trim_end_matches("::");
            if !path.is_empty() {
                refs.insert(path.to_owned());
            }
        }
    }
    refs
}

/// The identifiers right after each `prefix` in `code`.
fn after(code: &str, prefix: &str) -> Vec<String> {
    code.split(prefix)
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect::<String>()
        })
        .map(|path| path.trim_end_matches(':').to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// A path `a -> b -> … -> a`, if the graph has a cycle.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(graph, start, &mut path, &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn visit(
    graph: &Graph,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| n == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(cycle) = visit(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}
