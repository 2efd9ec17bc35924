//! Certificate files: a CA's folder, a party's folder, and the steps of `veil certs`
//! (make a CA, make a party's key and signing request, sign it, revoke a certificate).
//!
//! A **CA folder** holds `ca.pem` (the CA certificate, public), `ca.key` (its key, mode
//! 0600) and, once something is revoked, `ca.crl` (its revocation list, public).
//!
//! A **party folder** (what `--tls-dir` names) holds:
//! - `ROLE.key`: the party's key, mode 0600, made on the party's machine and never sent
//!   anywhere; `ROLE.csr`: its signing request, for the CA's operator;
//! - `ROLE.pem`: the certificate the CA signed;
//! - `trust-PEER.pem` for each role PEER it talks to: the CA certificate(s) it trusts
//!   for peers of that role (a client: `trust-server.pem` and `trust-dealer.pem`; the
//!   server: `trust-dealer.pem` and `trust-client.pem`; the dealer: `trust-server.pem`
//!   and `trust-client.pem`), and optionally `trust-PEER.crl`, revocation lists for
//!   those CAs;
//! - or, instead of `trust-*.pem` (tests and one-CA set-ups only), `ca.pem`: one CA
//!   trusted for every peer role (and optionally `ca.crl`). Its operator can then pose
//!   as any party; the documented deployment gives the dealer's operator and the model
//!   owner a CA each.
//!
//! Key files are created with mode 0600 in one step (`create_new`, never written and
//! then restricted), and no existing file is overwritten, except a CA's `ca.crl`, which
//! is replaced whole (written beside it, then renamed).

use std::io::Write;
use std::path::{Path, PathBuf};

use veil_net::Role;
use veil_net::pki::{CertificateAuthority, SignedCertificate, SigningRequest};
use veil_net::tls::{PeerIdentity, TlsIdentity, TrustRoots};

use crate::{Error, Result};

/// The CA certificate's file in a CA folder (and a single-CA party folder).
pub const CA_CERTIFICATE_FILE: &str = "ca.pem";
/// The CA key's file in a CA folder.
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA's revocation list in a CA folder (and a single-CA party folder).
pub const CA_REVOCATION_FILE: &str = "ca.crl";

/// The roles a party of `role` talks to, and so trusts roots for.
pub fn peer_roles(role: Role) -> &'static [Role] {
    match role {
        Role::Client => &[Role::Server, Role::Dealer],
        Role::Server => &[Role::Dealer, Role::Client],
        Role::Dealer => &[Role::Server, Role::Client],
        Role::Helper => &[Role::Server, Role::Client, Role::Dealer],
    }
}

/// `trust-PEER.pem`: the roots a party trusts for peers of role `peer`.
pub fn trust_file(peer: Role) -> String {
    format!("trust-{peer}.pem")
}

/// `trust-PEER.crl`: revocation lists for the roots of `trust-PEER.pem`.
pub fn trust_revocation_file(peer: Role) -> String {
    format!("trust-{peer}.crl")
}

fn folder_error(folder: &Path, reason: String) -> Error {
    Error::Net(veil_net::Error::Certificate {
        context: "loading the certificate folder",
        reason: format!("{}: {reason}", folder.display()),
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))
}

/// Creates `path` with mode 0600 (owner only) in one step and writes `contents`; refuses
/// to replace an existing file.
pub fn write_private_file(path: &Path, contents: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(Error::io(format!(
        "creating {} (an existing key is never overwritten; move it away first)",
        path.display()
    )))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Error::io(format!("writing {}", path.display())))
}

/// Creates `path` (refusing to replace an existing file) and writes `contents`.
pub fn write_public_file(path: &Path, contents: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(Error::io(format!(
            "creating {} (an existing file is never overwritten; move it away first)",
            path.display()
        )))?;
    file.write_all(contents.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))
}

/// Replaces `path` whole with `contents`: written beside it, then renamed over it.
fn replace_public_file(path: &Path, contents: &str) -> Result<()> {
    let temporary = path.with_extension("crl.new");
    let _ = std::fs::remove_file(&temporary);
    write_public_file(&temporary, contents)?;
    std::fs::rename(&temporary, path).map_err(Error::io(format!("replacing {}", path.display())))
}

/// Creates `folder` (and its parents); on Unix a new folder is owner-only (0700).
pub fn create_private_folder(folder: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(folder)
        .map_err(Error::io(format!("creating {}", folder.display())))
}

/// `veil certs ca`: a fresh CA in `folder` (`ca.pem`, and `ca.key` with mode 0600).
pub fn create_ca(folder: &Path, common_name: &str) -> Result<CertificateAuthority> {
    let authority = CertificateAuthority::generate(common_name)?;
    create_private_folder(folder)?;
    write_private_file(&folder.join(CA_KEY_FILE), authority.key_pem())?;
    write_public_file(
        &folder.join(CA_CERTIFICATE_FILE),
        authority.certificate_pem(),
    )?;
    Ok(authority)
}

/// The CA in `folder` (as [`create_ca`] wrote it).
pub fn load_ca(folder: &Path) -> Result<CertificateAuthority> {
    Ok(CertificateAuthority::from_pem(
        &read_text(&folder.join(CA_CERTIFICATE_FILE))?,
        &read_text(&folder.join(CA_KEY_FILE))?,
    )?)
}

/// `veil certs request`: a fresh key for a party of `role` (`ROLE.key`, mode 0600) and
/// its signing request (`ROLE.csr`) in `folder`; returns the request's path.
pub fn create_request(folder: &Path, role: Role, name: Option<&str>) -> Result<PathBuf> {
    let request = SigningRequest::generate(role, name)?;
    create_private_folder(folder)?;
    write_private_file(&folder.join(format!("{role}.key")), request.key_pem())?;
    let path = folder.join(format!("{role}.csr"));
    write_public_file(&path, request.request_pem())?;
    Ok(path)
}

/// `veil certs sign`: the CA in `ca_folder` checks the request in `request` (it must ask
/// for `role`) and writes the certificate to `out`.
pub fn sign_request(
    ca_folder: &Path,
    request: &Path,
    role: Role,
    days: u32,
    out: &Path,
) -> Result<SignedCertificate> {
    let authority = load_ca(ca_folder)?;
    let signed = authority.sign_for_days(&read_text(request)?, role, days)?;
    write_public_file(out, &signed.certificate_pem)?;
    Ok(signed)
}

/// `veil certs revoke`: adds `certificate` (one the CA in `ca_folder` issued) to the
/// CA's revocation list (`ca.crl` in the CA folder, made if absent, or `out`); returns
/// the list's path and the revoked serial number.
pub fn revoke_certificate(
    ca_folder: &Path,
    certificate: &Path,
    out: Option<&Path>,
) -> Result<(PathBuf, String)> {
    let authority = load_ca(ca_folder)?;
    let path = out.map_or_else(|| ca_folder.join(CA_REVOCATION_FILE), Path::to_path_buf);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(Error::io(format!("reading {}", path.display()))(error));
        }
    };
    let (list, serial) = authority.revoke(existing.as_deref(), &read_text(certificate)?)?;
    replace_public_file(&path, &list)?;
    Ok((path, serial))
}

/// The files of a local test deployment [`create_local_deployment`] made.
#[derive(Clone, Debug)]
pub struct LocalDeployment {
    /// The dealer operator's CA folder.
    pub dealer_ca: PathBuf,
    /// The model owner's CA folder (it signs the server's and the client's certificates).
    pub owner_ca: PathBuf,
    /// Each party's folder (what its `--tls-dir` names).
    pub parties: Vec<(Role, PathBuf)>,
}

impl LocalDeployment {
    /// The folder of `role`.
    pub fn party(&self, role: Role) -> Option<&Path> {
        self.parties
            .iter()
            .find(|(party, _)| *party == role)
            .map(|(_, folder)| folder.as_path())
    }

    /// `--tls-dir FOLDER` for `role`'s process.
    pub fn tls_arguments(&self, role: Role) -> crate::Result<Vec<String>> {
        let folder = self.party(role).ok_or(crate::Error::Unreachable(
            "no certificate folder was made for this role",
        ))?;
        Ok(vec!["--tls-dir".into(), folder.display().to_string()])
    }

    /// `role`'s transport with `options`.
    pub fn transport(
        &self,
        role: Role,
        options: veil_net::TcpOptions,
    ) -> crate::Result<crate::transport::Transport> {
        let folder = self.party(role).ok_or(crate::Error::Unreachable(
            "no certificate folder was made for this role",
        ))?;
        crate::transport::Transport::from_certificate_folder(folder, role, options)
    }
}

/// The name `veil certs local` gives the client.
pub const LOCAL_CLIENT_NAME: &str = "local-client";

/// `veil certs local`, for tests on one machine only: the documented deployment's
/// certificates in one go: a CA for the dealer's operator (`dealer-ca/`), one for the
/// model owner (`owner-ca/`, signing the server and the client, named
/// [`LOCAL_CLIENT_NAME`]), and a complete party folder each (`dealer/`, `server/`,
/// `client/`) with its own key and its trust roots per peer role. Every key is on this
/// machine, so this is no deployment: there each party runs `veil certs request` on its
/// own machine.
pub fn create_local_deployment(folder: &Path) -> Result<LocalDeployment> {
    create_private_folder(folder)?;
    let dealer_ca_folder = folder.join("dealer-ca");
    let owner_ca_folder = folder.join("owner-ca");
    let dealer_ca = create_ca(&dealer_ca_folder, "veil dealer operator CA (local test)")?;
    let owner_ca = create_ca(&owner_ca_folder, "veil model owner CA (local test)")?;
    let ca_of = |role: Role| match role {
        Role::Dealer => &dealer_ca,
        _ => &owner_ca,
    };
    let mut parties = Vec::new();
    for role in [Role::Dealer, Role::Server, Role::Client] {
        let party = folder.join(role.name());
        let name = match role {
            Role::Client => LOCAL_CLIENT_NAME,
            _ => role.name(),
        };
        let request = create_request(&party, role, Some(name))?;
        let signed = ca_of(role).sign(&read_text(&request)?, role)?;
        write_public_file(&party.join(format!("{role}.pem")), &signed.certificate_pem)?;
        for &peer in peer_roles(role) {
            write_public_file(&party.join(trust_file(peer)), ca_of(peer).certificate_pem())?;
        }
        parties.push((role, party));
    }
    Ok(LocalDeployment {
        dealer_ca: dealer_ca_folder,
        owner_ca: owner_ca_folder,
        parties,
    })
}

/// This party's identity from its folder (see the module docs): `ROLE.pem`, `ROLE.key`,
/// and the trust roots, per peer role (`trust-PEER.pem`, `trust-PEER.crl`) or one CA
/// for every role (`ca.pem`, `ca.crl`); plus the revocation lists in `revocations`,
/// applied to every peer role. The certificate must state `role`.
pub fn load_identity(folder: &Path, role: Role, revocations: &[PathBuf]) -> Result<TlsIdentity> {
    let trust = load_trust(folder, role)?;
    let mut trust = trust;
    for path in revocations {
        trust.add_revocations_pem_for_all(&read(path)?)?;
    }
    let certificate_path = folder.join(format!("{role}.pem"));
    let key_path = folder.join(format!("{role}.key"));
    if !certificate_path.exists() && folder.join(format!("{role}.csr")).exists() {
        return Err(folder_error(
            folder,
            format!(
                "{role}.pem is missing: send {role}.csr to the CA's operator (`veil certs sign`) and put the certificate it returns there"
            ),
        ));
    }
    let identity = TlsIdentity::new(&trust, &read(&certificate_path)?, &read(&key_path)?)?;
    if identity.role() != role {
        return Err(Error::WrongCertificate {
            path: certificate_path.display().to_string(),
            found: identity.role(),
        });
    }
    Ok(identity)
}

/// The roots a party of `role` trusts, from its folder.
fn load_trust(folder: &Path, role: Role) -> Result<TrustRoots> {
    let per_role: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|peer| folder.join(trust_file(*peer)).exists())
        .collect();
    let single = folder.join(CA_CERTIFICATE_FILE);
    let mut trust = TrustRoots::new();
    match (per_role.is_empty(), single.exists()) {
        (false, true) => {
            return Err(folder_error(
                folder,
                "it holds both ca.pem (one CA for every role) and trust-*.pem (roots per role); keep one layout".into(),
            ));
        }
        (true, false) => {
            return Err(folder_error(
                folder,
                format!(
                    "no trust roots: put the CA certificates this {role} trusts in {} (see `veil certs`)",
                    peer_roles(role)
                        .iter()
                        .map(|peer| trust_file(*peer))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        }
        (true, true) => {
            tracing::warn!(
                folder = %folder.display(),
                "one CA (ca.pem) is trusted for every peer role: its operator can pose as any party; deployments trust a CA per peer role (trust-ROLE.pem)"
            );
            let pem = read(&single)?;
            for peer in Role::ALL {
                trust.add_pem(peer, &pem)?;
            }
            let list = folder.join(CA_REVOCATION_FILE);
            if list.exists() {
                trust.add_revocations_pem_for_all(&read(&list)?)?;
            }
        }
        (false, false) => {
            for peer in per_role {
                trust.add_pem(peer, &read(&folder.join(trust_file(peer)))?)?;
                let list = folder.join(trust_revocation_file(peer));
                if list.exists() {
                    trust.add_revocations_pem(peer, &read(&list)?)?;
                }
            }
            let missing: Vec<String> = peer_roles(role)
                .iter()
                .filter(|peer| !trust.roles().contains(peer))
                .map(|peer| trust_file(*peer))
                .collect();
            if !missing.is_empty() {
                tracing::warn!(
                    folder = %folder.display(),
                    missing = %missing.join(", "),
                    "no trust roots for some peer roles this party talks to: those peers will be refused"
                );
            }
        }
    }
    Ok(trust)
}

/// The identity a certificate file states, and its serial number (hexadecimal).
pub fn describe(certificate: &Path) -> Result<(PeerIdentity, String)> {
    Ok(veil_net::pki::describe_certificate(&read_text(
        certificate,
    )?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let folder = std::env::temp_dir().join(format!(
            "veil-certificates-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&folder);
        folder
    }

    #[test]
    fn keys_are_created_owner_only_and_never_overwritten() {
        let folder = scratch("keys");
        create_request(&folder, Role::Client, Some("alice")).unwrap();
        let key = folder.join("client.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let folder_mode = std::fs::metadata(&folder).unwrap().permissions().mode();
            assert_eq!(folder_mode & 0o077, 0);
        }
        let before = std::fs::read(&key).unwrap();
        assert!(create_request(&folder, Role::Client, Some("alice")).is_err());
        assert_eq!(std::fs::read(&key).unwrap(), before);
        assert!(
            !std::fs::read_to_string(folder.join("client.csr"))
                .unwrap()
                .contains("PRIVATE")
        );
        let _ = std::fs::remove_dir_all(&folder);
    }

    #[test]
    fn the_local_deployment_keeps_each_key_in_its_partys_folder() {
        let folder = scratch("local");
        let deployment = create_local_deployment(&folder).unwrap();
        for (role, party) in &deployment.parties {
            let keys: Vec<String> = std::fs::read_dir(party)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".key"))
                .collect();
            assert_eq!(keys, vec![format!("{role}.key")]);
            let identity = load_identity(party, *role, &[]).unwrap();
            assert_eq!(identity.role(), *role);
        }
        let client = deployment.party(Role::Client).unwrap();
        assert_eq!(
            load_identity(client, Role::Client, &[]).unwrap().name(),
            Some(LOCAL_CLIENT_NAME)
        );
        // A folder for one role does not load as another.
        assert!(load_identity(client, Role::Server, &[]).is_err());
        // Revoking the client twice keeps one list, naming it once.
        let certificate = client.join("client.pem");
        let (list, serial) = revoke_certificate(&deployment.owner_ca, &certificate, None).unwrap();
        revoke_certificate(&deployment.owner_ca, &certificate, None).unwrap();
        assert_eq!(describe(&certificate).unwrap().1, serial);
        assert!(load_identity(client, Role::Client, &[list]).is_ok());
        // The dealer's CA did not sign the client: it cannot revoke it.
        assert!(revoke_certificate(&deployment.dealer_ca, &certificate, None).is_err());
        let _ = std::fs::remove_dir_all(&folder);
    }
}
