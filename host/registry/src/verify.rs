//! Everything checked before a plugin is stored or run, fail-closed: each refusal is one line.

use anyhow::{Context, bail};

use crate::manifest::Manifest;

/// How strict an install is about signatures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Accept a manifest with no signature (`--allow-unsigned`). A signature that is present
    /// must still verify under a trusted key.
    pub allow_unsigned: bool,
}

/// What the checks found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The trusted key that signed it (`None`: unsigned, allowed by the policy).
    pub signed_by: Option<String>,
    /// What the host saw when it loaded the component.
    pub summary: llmb_engine::plugin::PluginSummary,
}

/// Checks `bytes` against `manifest` in order, stopping at the first failure:
/// 1. sha256 equals the manifest's;
/// 2. the signature verifies under a key the user trusts (or unsigned is allowed);
/// 3. the manifest's WIT range holds the host's `llmb:plugin` version;
/// 4. the host loads it: a component of the manifest's kind whose `info` says the same name
///    and version, importing nothing the host does not provide.
pub fn check(
    manifest: &Manifest,
    bytes: &[u8],
    origin: &crate::fetch::Location,
    policy: Policy,
) -> anyhow::Result<Verified> {
    manifest.check()?;
    let digest = crate::sha256_hex(bytes);
    if digest != manifest.sha256 {
        bail!(
            "refused {}@{}: sha256 mismatch (the manifest pins {}, the file is {digest})",
            manifest.name,
            manifest.version,
            manifest.sha256
        );
    }
    let signed_by = match &manifest.signature {
        Some(sig) => {
            crate::signing::verify(&sig.key, &manifest.signed_message(), &sig.sig)
                .with_context(|| format!("refused {}@{}", manifest.name, manifest.version))?;
            if !crate::trust::is_trusted(&sig.key)? {
                bail!(
                    "refused {}@{}: signed by {}, a key you do not trust (`llmb plugin trust {}` \
                     if you do)",
                    manifest.name,
                    manifest.version,
                    sig.key,
                    sig.key
                );
            }
            Some(sig.key.clone())
        }
        None if policy.allow_unsigned => None,
        None => bail!(
            "refused {}@{}: unsigned (pass --allow-unsigned to install it anyway)",
            manifest.name,
            manifest.version
        ),
    };
    let range = semver::VersionReq::parse(&manifest.wit)?;
    let spoken = std::iter::once(llmb_engine::plugin::WIT_VERSION)
        .chain(llmb_engine::plugin::LEGACY_WIT_VERSIONS.iter().copied())
        .map(semver::Version::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if !spoken.iter().any(|v| range.matches(v)) {
        bail!(
            "refused {}@{}: it supports WIT llmb:plugin {}, this llmb speaks {} (and runs \
             components built for {})",
            manifest.name,
            manifest.version,
            manifest.wit,
            llmb_engine::plugin::WIT_VERSION,
            llmb_engine::plugin::LEGACY_WIT_VERSIONS.join(", ")
        );
    }
    let origin = llmb_engine::plugin::Origin::File(origin.to_string().into());
    let summary = llmb_engine::plugin::inspect(bytes, origin)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(|| format!("refused {}@{}", manifest.name, manifest.version))?;
    if summary.kind.as_str() != manifest.kind
        || summary.name != manifest.name
        || summary.version != manifest.version
    {
        bail!(
            "refused {}@{}: the component says it is the {} {}@{}",
            manifest.name,
            manifest.version,
            summary.kind.as_str(),
            summary.name,
            summary.version
        );
    }
    Ok(Verified { signed_by, summary })
}
