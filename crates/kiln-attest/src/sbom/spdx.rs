//! A [`Scan`] as an SPDX 2.3 JSON document.
//!
//! The document DESCRIBES one package standing for the scanned root (the image), which
//! CONTAINS every package found; each package CONTAINS the files its database lists
//! (those present in the root, with the SHA-1 that SPDX 2.3 requires of every file and a
//! SHA-256). A package with files is `filesAnalyzed: true` with its verification code
//! (SPDX allows CONTAINS relationships to files only then); one without is
//! `filesAnalyzed: false`. Licences are `licenseDeclared` (what the metadata declares;
//! `licenseConcluded` stays NOASSERTION), and every `LicenseRef-` used is declared in
//! `hasExtractedLicensingInfos`.
//!
//! Written with serde structs of our own: the Rust SPDX model crates (`spdx-rs`) are
//! unmaintained and cover 2.2. Output is deterministic: everything is sorted, ids are
//! derived from content, and the creation time and namespace come from the caller.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{license, SbomError, Scan};

/// What identifies the document (everything not derived from the scan).
#[derive(Debug, Clone)]
pub struct DocumentInfo {
    /// Document name and the name of the package standing for the scanned root,
    /// e.g. the image reference.
    pub name: String,
    /// Creation time, seconds since the epoch (`SOURCE_DATE_EPOCH` when set).
    pub created: u64,
    /// Mixed into the document namespace with the scan's content (e.g. the image
    /// digest or the build's invocation id), so distinct documents get distinct
    /// namespaces and the same inputs the same one.
    pub namespace_seed: String,
    /// Namespace URI prefix.
    pub namespace_prefix: String,
    /// `Tool:` creator, e.g. `kiln-0.1.0`.
    pub tool: String,
}

impl DocumentInfo {
    pub fn new(name: impl Into<String>, created: u64, namespace_seed: impl Into<String>) -> Self {
        DocumentInfo {
            name: name.into(),
            created,
            namespace_seed: namespace_seed.into(),
            namespace_prefix: "https://spdx.org/spdxdocs/kiln".into(),
            tool: format!("kiln-{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: &'a str,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<SpdxPackage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<SpdxFile>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    has_extracted_licensing_infos: Vec<Extracted>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supplier: Option<String>,
    download_location: &'static str,
    files_analyzed: bool,
    license_concluded: &'static str,
    license_declared: String,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_verification_code: Option<VerificationCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerificationCode {
    package_verification_code_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpdxFile {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    file_name: String,
    checksums: Vec<Checksum>,
    license_concluded: &'static str,
    copyright_text: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Extracted {
    license_id: String,
    extracted_text: String,
    name: String,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..8])
}

/// An SPDXID (`[A-Za-z0-9.-]`) with a readable part and a content hash.
fn spdx_id(kind: &str, readable: &str, key: &str) -> String {
    let readable: String = readable
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    format!("SPDXRef-{kind}-{readable}-{}", short_hash(key))
}

/// The SPDX 2.3 JSON document for `scan`.
pub fn document(scan: &Scan, info: &DocumentInfo) -> Result<Vec<u8>, SbomError> {
    let root_id = "SPDXRef-RootFS".to_string();
    let mut packages = Vec::new();
    let mut relationships = BTreeSet::new();
    let mut refs: BTreeSet<String> = BTreeSet::new();
    let mut file_ids: BTreeMap<&str, String> = BTreeMap::new();
    let mut ns = Sha256::new();
    ns.update(info.namespace_seed.as_bytes());
    ns.update(b"\n");
    ns.update(info.name.as_bytes());
    ns.update(b"\n");

    for p in &scan.packages {
        ns.update(p.purl.as_bytes());
        ns.update(b"\n");
        let id = spdx_id(
            &format!("Package-{}", p.ecosystem.as_str()),
            &p.name,
            &p.purl,
        );
        let declared = match &p.license {
            Some(l) => {
                refs.extend(license::license_refs(l));
                l.clone()
            }
            None => "NOASSERTION".to_string(),
        };
        let mut sha1s: Vec<&str> = Vec::new();
        for f in &p.files {
            if let Some(d) = scan.files.get(f) {
                sha1s.push(&d.sha1);
                let fid = file_ids
                    .entry(f.as_str())
                    .or_insert_with(|| spdx_id("File", f.rsplit('/').next().unwrap_or(f), f))
                    .clone();
                ns.update(d.sha256.as_bytes());
                relationships.insert(Relationship {
                    spdx_element_id: id.clone(),
                    relationship_type: "CONTAINS",
                    related_spdx_element: fid,
                });
            }
        }
        relationships.insert(Relationship {
            spdx_element_id: root_id.clone(),
            relationship_type: "CONTAINS",
            related_spdx_element: id.clone(),
        });
        packages.push(SpdxPackage {
            spdx_id: id,
            name: p.name.clone(),
            version_info: Some(p.version.clone()),
            supplier: p.supplier.as_ref().map(|s| supplier(s)),
            download_location: "NOASSERTION",
            files_analyzed: !sha1s.is_empty(),
            license_concluded: "NOASSERTION",
            license_declared: declared,
            package_verification_code: verification_code(sha1s),
            copyright_text: "NOASSERTION",
            source_info: Some(format!("recorded in {}", p.found_in.join(", "))),
            primary_package_purpose: None,
            external_refs: vec![ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: p.purl.clone(),
            }],
        });
    }
    packages.push(SpdxPackage {
        spdx_id: root_id.clone(),
        name: info.name.clone(),
        version_info: None,
        supplier: None,
        download_location: "NOASSERTION",
        files_analyzed: false,
        license_concluded: "NOASSERTION",
        license_declared: "NOASSERTION".into(),
        copyright_text: "NOASSERTION",
        package_verification_code: None,
        source_info: None,
        primary_package_purpose: Some("CONTAINER"),
        external_refs: Vec::new(),
    });
    packages.sort_by(|a, b| a.spdx_id.cmp(&b.spdx_id));
    relationships.insert(Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: root_id,
    });

    let mut files: Vec<SpdxFile> = file_ids
        .into_iter()
        .filter_map(|(path, id)| {
            let d = scan.files.get(path)?;
            Some(SpdxFile {
                spdx_id: id,
                // SPDX file names are relative, `./`-prefixed.
                file_name: format!(".{path}"),
                checksums: vec![
                    Checksum {
                        algorithm: "SHA1",
                        checksum_value: d.sha1.clone(),
                    },
                    Checksum {
                        algorithm: "SHA256",
                        checksum_value: d.sha256.clone(),
                    },
                ],
                license_concluded: "NOASSERTION",
                copyright_text: "NOASSERTION",
            })
        })
        .collect();
    files.sort_by(|a, b| a.spdx_id.cmp(&b.spdx_id));

    let extracted = refs
        .into_iter()
        .map(|id| {
            let name = id.trim_start_matches("LicenseRef-").to_string();
            Extracted {
                extracted_text: format!(
                    "The licence named \"{name}\" in the package's metadata (not on the SPDX licence list)."
                ),
                license_id: id,
                name,
            }
        })
        .collect();

    let slug: String = info
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: &info.name,
        document_namespace: format!(
            "{}/{}-{}",
            info.namespace_prefix.trim_end_matches('/'),
            slug,
            hex::encode(&ns.finalize()[..16])
        ),
        creation_info: CreationInfo {
            created: crate::rfc3339(info.created),
            creators: vec![format!("Tool: {}", info.tool)],
        },
        packages,
        files,
        has_extracted_licensing_infos: extracted,
        relationships: relationships.into_iter().collect(),
    };
    let mut out = serde_json::to_vec_pretty(&doc)?;
    out.push(b'\n');
    Ok(out)
}

/// SPDX's package verification code: the SHA-1 of the package's files' SHA-1s, sorted
/// and concatenated; `None` for a package with no file listed.
fn verification_code(mut sha1s: Vec<&str>) -> Option<VerificationCode> {
    use sha1::Digest as _;
    if sha1s.is_empty() {
        return None;
    }
    sha1s.sort_unstable();
    let mut h = sha1::Sha1::new();
    for s in sha1s {
        h.update(s.as_bytes());
    }
    Some(VerificationCode {
        package_verification_code_value: hex::encode(h.finalize()),
    })
}

/// An SPDX supplier: `Person: Name (email)` or `Organization: ...` (one that names a
/// team or a list is an organisation).
fn supplier(raw: &str) -> String {
    let raw = raw.replace(['\n', '\r'], " ");
    let (name, email) = match raw.split_once('<') {
        Some((n, rest)) => (n.trim(), rest.split('>').next().unwrap_or("").trim()),
        None => (raw.trim(), ""),
    };
    let lower = name.to_ascii_lowercase();
    let kind = if [
        "team",
        "maintainers",
        "developers",
        "project",
        "group",
        "list",
        "foundation",
        "inc",
        "ltd",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        "Organization"
    } else {
        "Person"
    };
    if email.is_empty() {
        format!("{kind}: {name}")
    } else {
        format!("{kind}: {name} ({email})")
    }
}
