//! `credentialflow certs init`: a development CA and node certificates made with rcgen,
//! for HTTPS on the proxy and admin listeners and mutual TLS between peers. Each node
//! certificate is valid as a server and as a client, for every name in `--hosts`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::cli::CertsInitArgs;

/// Writes the CA and `args.nodes` node certificates into `args.out`; returns the paths.
pub fn init(args: &CertsInitArgs) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!((1..=1000).contains(&args.nodes), "--nodes must be 1 to 1000");
    anyhow::ensure!(!args.hosts.is_empty(), "--hosts must name at least one host");
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;

    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.distinguished_name = name("credentialflow development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).context("cannot sign the CA")?;

    let mut written = vec![
        write(&args.out, "ca.pem", &ca.pem(), false)?,
        write(&args.out, "ca-key.pem", &ca_key.serialize_pem(), true)?,
    ];
    for id in 1..=args.nodes {
        let key = KeyPair::generate().context("cannot generate a node key")?;
        let mut params = CertificateParams::new(args.hosts.clone()).context("invalid --hosts")?;
        params.distinguished_name = name(&format!("credentialflow node {id}"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .context("cannot sign a node certificate")?;
        written.push(write(&args.out, &format!("node-{id}.pem"), &cert.pem(), false)?);
        written.push(write(
            &args.out,
            &format!("node-{id}-key.pem"),
            &key.serialize_pem(),
            true,
        )?);
    }
    Ok(written)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Writes `contents`; private keys get mode 0600.
fn write(dir: &Path, file: &str, contents: &str, private: bool) -> anyhow::Result<PathBuf> {
    let path = dir.join(file);
    std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(path)
}
