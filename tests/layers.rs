//! The folder layout is the architecture: lower layers never import higher
//! ones. Checked on the source text, so a new import that breaks the order
//! fails here rather than in review.

use std::path::Path;

/// Modules from the bottom up; each may import only those before it.
const ORDER: [&str; 6] = ["signal", "event", "state", "risk", "detect", "alert"];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Everything above `alert` (the engine and what drives it).
    let higher_than_alert = [
        "engine",
        "pipeline",
        "replay",
        "bootstrap",
        "members",
        "report",
        "inspect",
        "simulate",
        "telemetry",
        "config",
    ];
    let mut problems = Vec::new();
    for (i, layer) in ORDER.iter().enumerate() {
        let mut files = Vec::new();
        let dir = src.join(layer);
        if dir.is_dir() {
            sources(&dir, &mut files);
        } else {
            files.push(src.join(format!("{layer}.rs")));
        }
        let forbidden: Vec<&str> = ORDER[i + 1..]
            .iter()
            .copied()
            .chain(higher_than_alert)
            .collect();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            // Unit tests (at the end of a file) may borrow helpers from
            // anywhere; only the code itself is layered.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                for m in &forbidden {
                    if line.contains(&format!("crate::{m}::"))
                        || line.contains(&format!("crate::{m};"))
                        || line.contains(&format!("crate::{m}}}"))
                    {
                        problems.push(format!(
                            "{}:{}: {layer} imports {m}: {}",
                            f.display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}
