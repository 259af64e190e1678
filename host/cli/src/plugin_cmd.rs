//! `llmb plugin export|search|install|list|update|remove|verify|trust|keygen|publish|index|lock`:
//! the plugin ecosystem's command line over `llmb-registry`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use llmb_engine::plugin::{Origin, PluginSummary, Registry};
use llmb_registry::fetch::{Location, fetch};
use llmb_registry::index::Index;
use llmb_registry::verify::Policy;
use llmb_registry::{Manifest, ManifestSignature, store};

use crate::args::{
    IndexArg, PluginExportArgs, PluginIndexArgs, PluginInstallArgs, PluginKeygenArgs,
    PluginLockArgs, PluginPublishArgs, PluginRemoveArgs, PluginSearchArgs, PluginTrustArgs,
    PluginUpdateArgs, PluginVerifyArgs,
};

/// The plugin files a run loads: the newest installed version of each name it uses (the
/// backend, the dataset reader), then the user's `--plugin` files, which win.
pub fn with_installed(plugins: &[PathBuf], names: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for name in names {
        if !llmb_registry::manifest::valid_name(name) {
            continue;
        }
        // An unreadable store must not stop runs that do not need it: say so and go on.
        match store::find(name, None) {
            Ok(Some(installed)) => paths.push(installed.wasm),
            Ok(None) => {}
            Err(e) => eprintln!("llmb: installed plugins not searched for {name}: {e:#}"),
        }
    }
    paths.extend(plugins.iter().cloned());
    Ok(paths)
}

fn index_of(arg: &IndexArg) -> anyhow::Result<Index> {
    let location = arg.index.as_deref().context(
        "no registry index: pass --index DIR|URL or set LLMB_PLUGIN_INDEX (this repository's \
         registry/ folder indexes the first-party plugins)",
    )?;
    Ok(Index::open(location))
}

/// `llmb plugin export NAME -o FILE`.
pub fn export(args: &PluginExportArgs) -> anyhow::Result<()> {
    let paths = with_installed(&args.plugins, &[&args.name])?;
    let registry = Registry::load(&paths)?;
    let summary = registry
        .summaries()
        .into_iter()
        .find(|p| p.name == args.name)
        .with_context(|| format!("no plugin named {:?} (see `llmb plugins`)", args.name))?;
    let bytes = match &summary.origin {
        Origin::Embedded => llmb_engine::plugin::embedded_bytes(&summary.sha256)
            .context("the embedded plugin's bytes are missing from this build")?
            .to_vec(),
        Origin::File(path) | Origin::Native(path) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
    };
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{} {} {} -> {} (sha256 {})",
        summary.kind.as_str(),
        summary.name,
        summary.version,
        args.output.display(),
        summary.sha256
    );
    Ok(())
}

/// `llmb plugin search [TERM]`.
pub async fn search(args: &PluginSearchArgs) -> anyhow::Result<()> {
    let index = index_of(&args.index)?;
    let found = index.search(&args.term).await?;
    println!(
        "{:<20} {:<8} {:<10} {:<7} description",
        "name", "kind", "version", "signed"
    );
    for m in &found {
        println!(
            "{:<20} {:<8} {:<10} {:<7} {}",
            m.name,
            m.kind,
            m.version,
            if m.signature.is_some() { "yes" } else { "no" },
            m.description
        );
    }
    if found.is_empty() {
        println!("(nothing matches {:?} in {})", args.term, index.location);
    }
    Ok(())
}

/// What an install spec names.
enum Spec {
    Indexed {
        name: String,
        version: Option<String>,
    },
    Manifest(Location),
    Wasm(Location),
}

fn parse_spec(spec: &str) -> Spec {
    let location = Location::parse(spec);
    let is_file = matches!(&location, Location::Path(p) if p.is_file());
    let is_url = matches!(location, Location::Url(_));
    if spec.ends_with(".json") && (is_file || is_url) {
        return Spec::Manifest(location);
    }
    if spec.ends_with(".wasm") || is_file || is_url {
        return Spec::Wasm(location);
    }
    let (name, version) = match spec.split_once('@') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (spec.to_string(), None),
    };
    Spec::Indexed { name, version }
}

/// `llmb plugin install SPEC`.
pub async fn install(args: &PluginInstallArgs) -> anyhow::Result<()> {
    let policy = Policy {
        allow_unsigned: args.allow_unsigned,
    };
    let (manifest, manifest_at, source) = match parse_spec(&args.spec) {
        Spec::Indexed { name, version } => {
            let index = index_of(&args.index)?;
            let (m, at) = index.resolve(&name, version.as_deref()).await?;
            (m, at, index.location.to_string())
        }
        Spec::Manifest(at) => {
            let bytes = fetch(&at).await?;
            let text = String::from_utf8(bytes).with_context(|| format!("{at}: not UTF-8"))?;
            (
                Manifest::parse(&text, &at.to_string())?,
                at.clone(),
                at.to_string(),
            )
        }
        Spec::Wasm(at) => {
            if !args.allow_unsigned {
                bail!(
                    "refused {at}: a bare .wasm carries no signature (install it from a signed \
                     manifest, or pass --allow-unsigned)"
                );
            }
            let bytes = fetch(&at).await?;
            let summary = llmb_engine::plugin::inspect(&bytes, Origin::File(at.to_string().into()))
                .map_err(|e| anyhow::anyhow!("refused {at}: {e:#}"))?;
            let manifest =
                manifest_for(&summary, llmb_registry::sha256_hex(&bytes), at.to_string());
            return store_verified(&manifest, &bytes, &at, &at.to_string(), policy);
        }
    };
    let wasm_at = manifest_at.sibling(&manifest.url);
    let bytes = fetch(&wasm_at).await?;
    store_verified(&manifest, &bytes, &wasm_at, &source, policy)
}

fn store_verified(
    manifest: &Manifest,
    bytes: &[u8],
    from: &Location,
    source: &str,
    policy: Policy,
) -> anyhow::Result<()> {
    let verified = llmb_registry::verify::check(manifest, bytes, from, policy)?;
    let installed = store::install(manifest, bytes, source)?;
    println!(
        "installed {} {} {} ({}) into {}",
        manifest.kind,
        manifest.name,
        manifest.version,
        match &verified.signed_by {
            Some(key) => format!("signed by trusted key {key}"),
            None => "unsigned, allowed by --allow-unsigned".into(),
        },
        installed.dir.display()
    );
    Ok(())
}

/// A manifest describing a component as the host sees it.
fn manifest_for(summary: &PluginSummary, sha256: String, url: String) -> Manifest {
    Manifest {
        name: summary.name.clone(),
        kind: summary.kind.as_str().into(),
        version: summary.version.clone(),
        description: summary.description.clone(),
        wit: format!("^{}", summary.wit_version),
        url,
        sha256,
        signature: None,
        author: String::new(),
        license: String::new(),
        homepage: String::new(),
    }
}

/// `llmb plugin list`.
pub fn list() -> anyhow::Result<()> {
    let installed = store::list()?;
    println!(
        "{:<20} {:<8} {:<10} {:<7} {:<64}  source",
        "name", "kind", "version", "signed", "sha256"
    );
    for i in &installed {
        let m = &i.manifest;
        println!(
            "{:<20} {:<8} {:<10} {:<7} {:<64}  {}",
            m.name,
            m.kind,
            m.version,
            if m.signature.is_some() { "yes" } else { "no" },
            m.sha256,
            i.source
        );
    }
    if installed.is_empty() {
        println!("(no plugins installed in {})", store::root()?.display());
    }
    Ok(())
}

/// `llmb plugin update [NAME]`.
pub async fn update(args: &PluginUpdateArgs) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for i in store::list()?.into_iter().rev() {
        let name = i.manifest.name.clone();
        if args.name.as_ref().is_some_and(|n| *n != name) || !seen.insert(name.clone()) {
            continue;
        }
        let source = Location::parse(&i.source);
        let is_index = match &source {
            Location::Path(p) => p.join(llmb_registry::index::INDEX_FILE).exists(),
            Location::Url(u) => !u.ends_with(".json") && !u.ends_with(".wasm"),
        };
        if !is_index {
            println!(
                "{name}: installed from {}, not an index: left as it is",
                i.source
            );
            continue;
        }
        let index = Index::open(&i.source);
        let (m, at) = index.resolve(&name, None).await?;
        if m.semver() <= i.manifest.semver() {
            println!("{name}: {} is the newest", i.manifest.version);
            continue;
        }
        let wasm_at = at.sibling(&m.url);
        let bytes = fetch(&wasm_at).await?;
        let policy = Policy {
            allow_unsigned: args.allow_unsigned,
        };
        store_verified(&m, &bytes, &wasm_at, &i.source, policy)?;
    }
    Ok(())
}

/// `llmb plugin remove NAME[@VERSION]`.
pub fn remove(args: &PluginRemoveArgs) -> anyhow::Result<()> {
    let (name, version) = match args.spec.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (args.spec.as_str(), None),
    };
    let gone = store::remove(name, version)?;
    if gone.is_empty() {
        bail!("{} is not installed (see `llmb plugin list`)", args.spec);
    }
    for i in gone {
        println!("removed {} {}", i.manifest.name, i.manifest.version);
    }
    Ok(())
}

/// `llmb plugin verify [NAME]`: fails when any installed plugin no longer checks out.
pub fn verify(args: &PluginVerifyArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for i in store::list()? {
        if args.name.as_ref().is_some_and(|n| *n != i.manifest.name) {
            continue;
        }
        let policy = Policy {
            allow_unsigned: i.manifest.signature.is_none(),
        };
        let result = std::fs::read(&i.wasm)
            .with_context(|| format!("reading {}", i.wasm.display()))
            .and_then(|bytes| {
                llmb_registry::verify::check(
                    &i.manifest,
                    &bytes,
                    &Location::Path(i.wasm.clone()),
                    policy,
                )
            });
        match result {
            Ok(_) => println!("ok      {} {}", i.manifest.name, i.manifest.version),
            Err(e) => {
                failed += 1;
                println!("FAILED  {} {}: {e:#}", i.manifest.name, i.manifest.version);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} installed plugin(s) failed verification");
    }
    Ok(())
}

/// `llmb plugin trust KEY`.
pub fn trust(args: &PluginTrustArgs) -> anyhow::Result<()> {
    if llmb_registry::trust::add(&args.key, &args.name)? {
        println!(
            "trusted {} (in {})",
            args.key,
            llmb_registry::trust::path()?.display()
        );
    } else {
        println!("{} was already trusted", args.key);
    }
    Ok(())
}

/// `llmb plugin keygen -o FILE`.
pub fn keygen(args: &PluginKeygenArgs) -> anyhow::Result<()> {
    if args.output.exists() {
        bail!("{} exists: not overwriting a key", args.output.display());
    }
    let (secret, public) = llmb_registry::signing::generate();
    write_secret(&args.output, &secret)?;
    println!("secret key: {} (keep it private)", args.output.display());
    println!("public key: {public}");
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{secret}")?;
    Ok(())
}

/// `llmb plugin publish FILE.wasm --index DIR [--key SECRET]`.
pub fn publish(args: &PluginPublishArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.wasm).with_context(|| format!("reading {}", args.wasm.display()))?;
    let summary = llmb_engine::plugin::inspect(&bytes, Origin::File(args.wasm.clone()))
        .with_context(|| format!("{} is not a plugin this llmb loads", args.wasm.display()))?;
    let mut manifest = manifest_for(
        &summary,
        llmb_registry::sha256_hex(&bytes),
        args.url.clone().unwrap_or_default(),
    );
    manifest.author = args.author.clone();
    manifest.license = args.license.clone();
    manifest.homepage = args.homepage.clone();
    if let Some(key_path) = &args.key {
        let secret = std::fs::read_to_string(key_path)
            .with_context(|| format!("reading the key {}", key_path.display()))?;
        let (key, sig) = llmb_registry::signing::sign(&secret, &manifest.signed_message())
            .with_context(|| format!("signing with {}", key_path.display()))?;
        manifest.signature = Some(ManifestSignature { key, sig });
    }
    let copy = args.url.is_none().then_some(bytes.as_slice());
    if copy.is_some() {
        manifest.url = "placeholder".into();
    }
    let at = llmb_registry::index::publish(&args.index, &manifest, copy)?;
    println!(
        "published {} {} {} ({}) -> {}",
        manifest.kind,
        manifest.name,
        manifest.version,
        if manifest.signature.is_some() {
            "signed"
        } else {
            "unsigned"
        },
        at.display()
    );
    Ok(())
}

/// The manifest `registry/` holds for an embedded plugin. The artifact is not checked in:
/// `llmb plugin export NAME -o registry/plugins/NAME/NAME-VERSION.wasm` puts it where the
/// relative URL points, for a mirror that serves files.
fn first_party_manifest(p: &PluginSummary) -> Manifest {
    let mut manifest = manifest_for(
        p,
        p.sha256.clone(),
        format!("{}-{}.wasm", p.name, p.version),
    );
    manifest.author = "llmb".into();
    manifest.license = env!("CARGO_PKG_LICENSE").into();
    manifest
}

/// `llmb plugin index [DIR] [--check]`.
pub fn index(args: &PluginIndexArgs) -> anyhow::Result<()> {
    let registry = Registry::load(&[])?;
    let embedded: Vec<Manifest> = registry
        .summaries()
        .iter()
        .filter(|p| p.origin == Origin::Embedded)
        .map(first_party_manifest)
        .collect();
    if !args.check {
        for m in &embedded {
            llmb_registry::index::publish(&args.dir, m, None)?;
        }
        println!(
            "wrote {} manifests into {}",
            embedded.len(),
            args.dir.display()
        );
        return Ok(());
    }
    let mut problems = Vec::new();
    for m in &embedded {
        let path = args
            .dir
            .join("plugins")
            .join(&m.name)
            .join(format!("{}.json", m.version));
        match std::fs::read_to_string(&path) {
            Err(_) => problems.push(format!("{}: missing", path.display())),
            Ok(text) => match Manifest::parse(&text, &path.display().to_string()) {
                Err(e) => problems.push(format!("{e:#}")),
                Ok(found) if found != *m => problems.push(format!(
                    "{}: differs from the embedded {} {} (sha256 {} there, {} built)",
                    path.display(),
                    m.name,
                    m.version,
                    found.sha256,
                    m.sha256
                )),
                Ok(_) => {}
            },
        }
    }
    let listed = llmb_registry::index::IndexFile {
        format: llmb_registry::index::FORMAT,
        plugins: embedded
            .iter()
            .map(|m| (m.name.clone(), vec![m.version.clone()]))
            .collect(),
    };
    let index_path = args.dir.join(llmb_registry::index::INDEX_FILE);
    let on_disk: Option<llmb_registry::index::IndexFile> = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if on_disk.as_ref() != Some(&listed) {
        problems.push(format!(
            "{}: does not list exactly the embedded plugins",
            index_path.display()
        ));
    }
    if !problems.is_empty() {
        bail!(
            "the registry index does not match this build ({} problem(s); `llmb plugin index {}` \
             rewrites it):\n  {}",
            problems.len(),
            args.dir.display(),
            problems.join("\n  ")
        );
    }
    println!(
        "{}: {} manifests match the embedded plugins",
        args.dir.display(),
        embedded.len()
    );
    Ok(())
}

/// `llmb plugin lock`.
pub fn lock(args: &PluginLockArgs) -> anyhow::Result<()> {
    let paths = with_installed(&args.plugins, &[&args.backend, &args.dataset_name])?;
    let registry = Registry::load(&paths)?;
    let mut lock = if args.lock.exists() {
        llmb_registry::lock::Lock::load(&args.lock)?
    } else {
        llmb_registry::lock::Lock::default()
    };
    let backend = registry.backend(&args.backend)?.summary();
    let dataset = registry.dataset(&args.dataset_name)?.summary();
    for p in [&backend, &dataset] {
        lock.pin(p);
        println!(
            "pinned {} {} {} (sha256 {})",
            p.kind.as_str(),
            p.name,
            p.version,
            p.sha256
        );
    }
    lock.save(&args.lock)?;
    println!("wrote {}", args.lock.display());
    Ok(())
}
