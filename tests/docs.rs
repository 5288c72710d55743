//! The README documents every environment variable the binary reads, with
//! the default `--help` prints.

#[test]
fn readme_lists_every_variable_with_its_default() {
    let readme = include_str!("../README.md");
    for var in trackgate::config::VARS {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` ", var.name)))
            .unwrap_or_else(|| panic!("README has no table row for {}", var.name));
        if !var.default.is_empty() {
            assert!(
                row.contains(&format!("`{}`", var.default)),
                "README row for {} lacks its default {:?}: {row}",
                var.name,
                var.default
            );
        }
    }
}
