//! Writes the CRD YAML generated from the Rust types: `crdgen` prints every CRD as one
//! multi-document stream; `crdgen --out crds` writes one file per CRD (what the repo holds).

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = match (args.next().as_deref(), args.next()) {
        (Some("--out"), Some(dir)) => Some(PathBuf::from(dir)),
        (None, None) => None,
        _ => anyhow::bail!("usage: crdgen [--out DIR]"),
    };
    for (file, crd) in tollgate_operator::crd::all() {
        let yaml = tollgate_operator::crd::to_yaml(&crd)?;
        match &out {
            Some(dir) => {
                let path = dir.join(file);
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
