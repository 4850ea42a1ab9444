//! The documentation stands alone: every relative link in the repository's Markdown
//! resolves to a file in the repository, and none points outside it.

use std::path::{Path, PathBuf};

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [
        root.to_path_buf(),
        root.join("proto"),
        root.join("monitoring"),
    ] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found
}

/// The targets of `[text](target)` links, without `#fragment`.
fn link_targets(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|t| t.split('#').next().unwrap_or("").trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

#[test]
fn every_relative_link_resolves_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = markdown_files(root);
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root).unwrap().display().to_string();
        assert!(
            !text.contains("../shared") && !text.contains("/work/shared"),
            "{name} refers to files outside the repository"
        );
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = file.parent().unwrap().join(&target);
            let resolved = resolved
                .canonicalize()
                .unwrap_or_else(|e| panic!("{name}: link {target:?} does not resolve: {e}"));
            assert!(
                resolved.starts_with(root.canonicalize().unwrap()),
                "{name}: link {target:?} leaves the repository"
            );
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("](proto/WHISPR-V1.md)"),
        "the README links the v1 API"
    );
}
