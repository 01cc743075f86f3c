//! The gateway's modules form layers: a module imports (`crate::…`) only modules of lower
//! layers, so there is no import cycle and the engine does not know its bindings. The
//! layers are declared here once; the test reads every source file's `crate::` paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. A module may use any module of a lower layer, none of its own or higher.
const LAYERS: &[&[&str]] = &[
    &[
        "addrlimit",
        "client",
        "clock",
        "keys",
        "metrics",
        "proxy_protocol",
        "ratelimit",
        "settings",
        "storage",
        "tls",
    ],
    &["registry"],
    &["sessions"],
    &["pipeline"],
    &["cluster"],
    &["admin"],
    &["dashboard"],
    &["http", "mqtt"],
    &["server"],
    &["local"],
];

/// The crate root's items every module may name (`crate::GatewayError`, `crate::Settings`:
/// re-exports of leaves).
const ROOT_ITEMS: &[&str] = &["GatewayError", "Settings", "StorageSync"];

fn layer_of(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

/// The top-level module a source file belongs to (`src/pipeline/records.rs` → `pipeline`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules `text` names as `crate::<module>` (in `use` lines and paths alike),
/// comments and doc links excluded.
fn crate_edges(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
        // `use crate::{a, b::c}`
        if let Some(i) = code.find("crate::{") {
            let inner = &code[i + "crate::{".len()..];
            for part in inner.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).expect("read");
        let e = edges.entry(m.clone()).or_default();
        for to in crate_edges(&text) {
            if to != m && !ROOT_ITEMS.contains(&to.as_str()) {
                e.insert(to);
            }
        }
    }
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        let Some(lf) = layer_of(from) else {
            wrong.push(format!("module `{from}` is in no layer (add it to LAYERS)"));
            continue;
        };
        for to in tos {
            match layer_of(to) {
                None => wrong.push(format!("`{from}` uses `crate::{to}`, which is in no layer")),
                Some(lt) if lt >= lf => wrong.push(format!(
                    "`{from}` (layer {lf}) uses `{to}` (layer {lt}): only lower layers allowed"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layer violations:\n{}", wrong.join("\n"));
    // The check saw the modules it is about (a parser that finds nothing passes vacuously).
    assert!(edges.get("server").is_some_and(|e| e.contains("pipeline")));
    assert!(edges.get("http").is_some_and(|e| e.contains("pipeline")));
}

#[test]
fn the_edge_parser_finds_uses_and_paths() {
    let e = crate_edges(
        "use crate::a::B;\nuse crate::{c, d::E};\nlet x = crate::f::g(); // crate::h\n",
    );
    let want: BTreeSet<String> = ["a", "c", "d", "f"].iter().map(|s| s.to_string()).collect();
    assert_eq!(e, want);
}
