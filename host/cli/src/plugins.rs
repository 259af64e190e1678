//! `llmb plugins`: every plugin this build knows (embedded and `--plugin` files), with its digest.

use llmb_engine::plugin::Registry;

use crate::args::PluginsArgs;

/// `llmb plugins`.
pub fn list_plugins(args: &PluginsArgs) -> anyhow::Result<()> {
    let registry = Registry::load_with(&args.plugins, args.allow_native)?;
    println!(
        "{:<18} {:<8} {:<6} {:<10} {:<64}  description",
        "name", "kind", "wit", "origin", "sha256"
    );
    for p in registry.summaries() {
        println!(
            "{:<18} {:<8} {:<6} {:<10} {:<64}  {}",
            p.name,
            p.kind.as_str(),
            p.wit_version,
            p.origin.to_string(),
            p.sha256,
            p.description
        );
    }
    Ok(())
}
