//! Issuing party certificates: a CA, per-party keys and signing requests, signing, and
//! revocation lists (what `veil certs` runs).
//!
//! Each party makes its own key and a signing request ([`SigningRequest`]) stating its
//! role and name; the key never leaves the party. A CA ([`CertificateAuthority`]) checks
//! a request (its signature, and that it asks for the role the operator means to sign
//! and nothing else) and issues a certificate of its own making: the request only
//! contributes the public key, the role and the name. Revocation lists
//! ([`CertificateAuthority::revoke`]) name revoked certificates by serial number.
//!
//! What is secret: the CA's key and each party's key. Their types print no key
//! material, and nothing here logs.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::tls::{
    NAME_URI_PREFIX, PARTY_DNS_NAME, PeerIdentity, certificate_identity, identity_from_uris,
    is_valid_name, role_uri,
};
use crate::{Error, Result, Role};

/// How long a party certificate is valid by default.
pub const DEFAULT_CERTIFICATE_DAYS: u32 = 365;
/// How long a CA certificate is valid.
pub const CA_CERTIFICATE_DAYS: u32 = 3650;
/// A revocation list's next-update time, from its issue.
pub const REVOCATION_LIST_DAYS: u32 = 365;

const DAY: Duration = Duration::from_secs(86_400);

fn pki_error(context: &'static str) -> impl Fn(String) -> Error {
    move |reason| Error::Certificate { context, reason }
}

/// A random 16-byte serial number (positive) from the OS random source.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Certificate {
            context: "drawing a serial number",
            reason: "the OS random source failed".into(),
        })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A CA: its certificate (public) and key (secret).
pub struct CertificateAuthority {
    certificate_pem: String,
    key_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("CertificateAuthority(<key not shown>)")
    }
}

/// A certificate a CA issued.
#[derive(Clone, Debug)]
pub struct SignedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Who it says its holder is.
    pub identity: PeerIdentity,
    /// Its serial number in hexadecimal (what a revocation list names).
    pub serial_hex: String,
}

impl CertificateAuthority {
    /// A fresh CA with a new key; `common_name` names it (e.g. "veil dealer CA, ORG").
    pub fn generate(common_name: &str) -> Result<Self> {
        let error = pki_error("making a CA");
        let key = KeyPair::generate().map_err(|e| error(e.to_string()))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| error(e.to_string()))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + DAY * CA_CERTIFICATE_DAYS).into();
        params.serial_number = Some(random_serial()?);
        params.key_identifier_method = KeyIdMethod::Sha256;
        let certificate = params.self_signed(&key).map_err(|e| error(e.to_string()))?;
        Ok(Self {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            key,
        })
    }

    /// A CA from its certificate and key (PEM, as [`Self::generate`] made them).
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self> {
        let error = pki_error("loading the CA");
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| error(format!("the CA key: {e} (a PEM private key)")))?;
        let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| error(format!("the CA certificate: {e}")))?;
        let parsed = parse_certificate(&certificate)?;
        if !parsed.is_ca() {
            return Err(error("the CA certificate is not a CA certificate".into()));
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(error(
                "the CA key does not belong to the CA certificate; use the ca.pem and ca.key `veil certs ca` wrote together".into(),
            ));
        }
        Ok(Self {
            certificate_pem: certificate_pem.to_string(),
            key_pem: key_pem.to_string(),
            key,
        })
    }

    /// The CA certificate, PEM (public: parties trust it).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA key, PEM (secret: write it only to a file of its own, mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>> {
        Issuer::from_ca_cert_pem(&self.certificate_pem, &self.key).map_err(|e| Error::Certificate {
            context: "loading the CA",
            reason: e.to_string(),
        })
    }

    /// Checks a signing request and issues a certificate for `role` valid for
    /// [`DEFAULT_CERTIFICATE_DAYS`]. See [`Self::sign_for_days`].
    pub fn sign(&self, request_pem: &str, role: Role) -> Result<SignedCertificate> {
        self.sign_for_days(request_pem, role, DEFAULT_CERTIFICATE_DAYS)
    }

    /// Checks a signing request and issues a certificate valid for `days`. The request's
    /// signature must hold, it must state exactly `role` (the role the CA's operator
    /// means to sign) and at most one valid name, a client request must state a name,
    /// and it may ask for nothing else (no CA rights, no other names). The certificate
    /// is made here: only the public key, the role and the name come from the request.
    pub fn sign_for_days(
        &self,
        request_pem: &str,
        role: Role,
        days: u32,
    ) -> Result<SignedCertificate> {
        let error = pki_error("signing a request");
        let request = CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| {
            error(format!(
                "the request is not a valid signing request ({e}); make one with `veil certs request`"
            ))
        })?;
        let identity = check_request(&request.params)?;
        if identity.role != role {
            return Err(Error::Certificate {
                context: "signing a request",
                reason: format!(
                    "the request asks for role {}, but this signing is for role {role}; refused",
                    identity.role
                ),
            });
        }
        let params = party_params(&identity, days)?;
        let serial_hex = params
            .serial_number
            .as_ref()
            .map(|serial| hex(serial.as_ref()))
            .unwrap_or_default();
        let signed = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer()?)
        .map_err(|e| error(e.to_string()))?;
        Ok(SignedCertificate {
            certificate_pem: signed.pem(),
            identity,
            serial_hex,
        })
    }

    /// A revocation list of this CA naming `certificate_pem` (a certificate this CA
    /// issued) and every certificate `existing_pem` (this CA's previous list, if any)
    /// names, with the next list number. Returns the list (PEM) and the revoked serial.
    pub fn revoke(
        &self,
        existing_pem: Option<&str>,
        certificate_pem: &str,
    ) -> Result<(String, String)> {
        let error = pki_error("revoking a certificate");
        let ca = CertificateDer::from_pem_slice(self.certificate_pem.as_bytes())
            .map_err(|e| error(format!("the CA certificate: {e}")))?;
        let ca = parse_certificate(&ca)?;
        let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| error(format!("the certificate to revoke: {e}")))?;
        let parsed = parse_certificate(&certificate)?;
        if parsed.verify_signature(Some(ca.public_key())).is_err() {
            return Err(error(
                "the certificate to revoke was not issued by this CA; revoke it with the CA that signed it".into(),
            ));
        }
        let serial = parsed.raw_serial().to_vec();
        let now = SystemTime::now();
        let mut revoked = Vec::new();
        let mut number = vec![0u8];
        if let Some(existing) = existing_pem {
            use x509_parser::prelude::FromDer;
            let list = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(
                existing.as_bytes(),
            )
            .map_err(|e| error(format!("the existing revocation list: {e}")))?;
            let (_, list) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(list.as_ref())
                    .map_err(|e| error(format!("the existing revocation list: {e}")))?;
            if list.verify_signature(ca.public_key()).is_err() {
                return Err(error(
                    "the existing revocation list was not signed by this CA".into(),
                ));
            }
            if let Some(previous) = list.crl_number() {
                number = previous.to_bytes_be();
            }
            for entry in list.iter_revoked_certificates() {
                revoked.push(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(entry.raw_serial()),
                    revocation_time: (SystemTime::UNIX_EPOCH
                        + Duration::from_secs(entry.revocation_date.timestamp().max(0) as u64))
                    .into(),
                    reason_code: None,
                    invalidity_date: None,
                });
            }
        }
        if !revoked
            .iter()
            .any(|entry| entry.serial_number.as_ref() == serial.as_slice())
        {
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: now.into(),
                reason_code: None,
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now.into(),
            next_update: (now + DAY * REVOCATION_LIST_DAYS).into(),
            crl_number: SerialNumber::from_slice(&increment(&number)),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let list = params
            .signed_by(&self.issuer()?)
            .map_err(|e| error(e.to_string()))?;
        let pem = list.pem().map_err(|e| error(e.to_string()))?;
        Ok((pem, hex(&serial)))
    }
}

/// A party's fresh key and its signing request.
pub struct SigningRequest {
    request_pem: String,
    key_pem: String,
    identity: PeerIdentity,
}

impl std::fmt::Debug for SigningRequest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "SigningRequest {{ identity: {:?}, key: <not shown> }}",
            self.identity
        )
    }
}

impl SigningRequest {
    /// A fresh key and a request for a certificate stating `role` and `name`. A client
    /// must have a name (its identity at the server and the dealer); names are 1 to 64
    /// of `A–Z a–z 0–9 . _ -`.
    pub fn generate(role: Role, name: Option<&str>) -> Result<Self> {
        let error = pki_error("making a signing request");
        if let Some(name) = name
            && !is_valid_name(name)
        {
            return Err(error(format!(
                "{name:?} is not a valid party name (1 to 64 of A-Z a-z 0-9 . _ -)"
            )));
        }
        if role == Role::Client && name.is_none() {
            return Err(error(
                "a client certificate needs a name (--name), so that each client is told apart"
                    .into(),
            ));
        }
        let identity = PeerIdentity {
            role,
            name: name.map(str::to_string),
        };
        let key = KeyPair::generate().map_err(|e| error(e.to_string()))?;
        let params = request_params(&identity)?;
        let request = params
            .serialize_request(&key)
            .map_err(|e| error(e.to_string()))?;
        Ok(Self {
            request_pem: request.pem().map_err(|e| error(e.to_string()))?,
            key_pem: key.serialize_pem(),
            identity,
        })
    }

    /// The request, PEM (public: give it to the CA's operator).
    pub fn request_pem(&self) -> &str {
        &self.request_pem
    }

    /// The key, PEM (secret: it stays with the party, in a file of mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Who the request says its party is.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }
}

/// The subject-alternative names of a party's certificate.
fn subject_alt_names(identity: &PeerIdentity) -> Result<Vec<SanType>> {
    let error = pki_error("naming a party");
    let uri = |text: String| -> Result<SanType> {
        Ok(SanType::URI(
            text.try_into()
                .map_err(|e: rcgen::Error| error(e.to_string()))?,
        ))
    };
    let mut names = vec![
        SanType::DnsName(
            PARTY_DNS_NAME
                .try_into()
                .map_err(|e: rcgen::Error| error(e.to_string()))?,
        ),
        uri(role_uri(identity.role))?,
    ];
    if let Some(name) = &identity.name {
        names.push(uri(format!("{NAME_URI_PREFIX}{name}"))?);
    }
    Ok(names)
}

fn common_name(identity: &PeerIdentity) -> String {
    match &identity.name {
        Some(name) => format!("veil {} {name}", identity.role),
        None => format!("veil {}", identity.role),
    }
}

fn request_params(identity: &PeerIdentity) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name(identity));
    params.subject_alt_names = subject_alt_names(identity)?;
    Ok(params)
}

/// The certificate a CA issues for `identity`: made from scratch, not from the request.
fn party_params(identity: &PeerIdentity, days: u32) -> Result<CertificateParams> {
    let mut params = request_params(identity)?;
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + DAY * days.max(1)).into();
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok(params)
}

/// What a request may ask for: the party DNS name, one role URI, at most one name URI
/// (a client's is required), and no CA rights. Returns the identity it states.
fn check_request(params: &CertificateParams) -> Result<PeerIdentity> {
    let error = pki_error("checking a signing request");
    if !matches!(params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
        return Err(error("the request asks for CA rights; refused".into()));
    }
    let mut uris = Vec::new();
    for name in &params.subject_alt_names {
        match name {
            SanType::URI(uri) => uris.push(uri.as_str().to_string()),
            SanType::DnsName(dns) if dns.as_str() == PARTY_DNS_NAME => {}
            _ => {
                return Err(error(format!(
                    "the request asks for a name other than the party DNS name {PARTY_DNS_NAME:?} and veil URIs; refused"
                )));
            }
        }
    }
    if uris.iter().any(|uri| {
        !uri.starts_with(crate::tls::ROLE_URI_PREFIX) && !uri.starts_with(NAME_URI_PREFIX)
    }) {
        return Err(error(
            "the request asks for a URI that is not a veil role or name; refused".into(),
        ));
    }
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    let identity = identity_from_uris(&uris).map_err(&error)?;
    if identity.role == Role::Client && identity.name.is_none() {
        return Err(error(
            "a client request must state a name (urn:veil:name:…), so that each client is told apart"
                .into(),
        ));
    }
    Ok(identity)
}

fn parse_certificate<'a>(
    certificate: &'a CertificateDer<'_>,
) -> Result<x509_parser::certificate::X509Certificate<'a>> {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(certificate.as_ref())
        .map(|(_, parsed)| parsed)
        .map_err(|e| Error::Certificate {
            context: "reading a certificate",
            reason: e.to_string(),
        })
}

/// The identity a certificate (PEM) states, and its serial number in hexadecimal.
pub fn describe_certificate(certificate_pem: &str) -> Result<(PeerIdentity, String)> {
    let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes()).map_err(|e| {
        Error::Certificate {
            context: "reading a certificate",
            reason: e.to_string(),
        }
    })?;
    let identity = certificate_identity(&certificate)?;
    let serial = hex(parse_certificate(&certificate)?.raw_serial());
    Ok((identity, serial))
}

/// A big-endian unsigned number plus one.
fn increment(number: &[u8]) -> Vec<u8> {
    let mut result = number.to_vec();
    for byte in result.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            return result;
        }
    }
    result.insert(0, 1);
    result
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_states_its_role_and_name_and_the_key_stays_out() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let request = SigningRequest::generate(Role::Client, Some("alice")).unwrap();
        assert!(!request.request_pem().contains("PRIVATE"));
        assert!(!format!("{request:?}").contains("PRIVATE"));
        assert!(!format!("{authority:?}").contains("PRIVATE"));
        let signed = authority.sign(request.request_pem(), Role::Client).unwrap();
        let (identity, serial) = describe_certificate(&signed.certificate_pem).unwrap();
        assert_eq!(identity.role, Role::Client);
        assert_eq!(identity.name.as_deref(), Some("alice"));
        assert_eq!(serial, signed.serial_hex);
    }

    #[test]
    fn the_ca_refuses_a_request_for_another_role() {
        let authority = CertificateAuthority::generate("model owner CA").unwrap();
        let request = SigningRequest::generate(Role::Dealer, None).unwrap();
        let refused = authority.sign(request.request_pem(), Role::Server);
        assert!(
            matches!(&refused, Err(Error::Certificate { reason, .. }) if reason.contains("role dealer")),
            "{refused:?}"
        );
    }

    #[test]
    fn requests_that_ask_for_more_are_refused() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let key = KeyPair::generate().unwrap();
        let sign = |params: CertificateParams| {
            let request = params.serialize_request(&key).unwrap().pem().unwrap();
            authority.sign(&request, Role::Server)
        };
        let identity = PeerIdentity {
            role: Role::Server,
            name: None,
        };
        let mut ca_rights = request_params(&identity).unwrap();
        ca_rights.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert!(sign(ca_rights).is_err());
        let mut other_name = request_params(&identity).unwrap();
        other_name
            .subject_alt_names
            .push(SanType::DnsName("example.com".try_into().unwrap()));
        assert!(sign(other_name).is_err());
        let mut two_roles = request_params(&identity).unwrap();
        two_roles
            .subject_alt_names
            .push(SanType::URI(role_uri(Role::Dealer).try_into().unwrap()));
        assert!(sign(two_roles).is_err());
        assert!(sign(request_params(&identity).unwrap()).is_ok());
        assert!(SigningRequest::generate(Role::Client, None).is_err());
        assert!(SigningRequest::generate(Role::Client, Some("a b")).is_err());
        assert!(authority.sign("not a request", Role::Server).is_err());
    }

    #[test]
    fn revocation_lists_accumulate_and_refuse_foreign_certificates() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let other = CertificateAuthority::generate("other CA").unwrap();
        let issue = |authority: &CertificateAuthority, name: &str| {
            let request = SigningRequest::generate(Role::Client, Some(name)).unwrap();
            authority.sign(request.request_pem(), Role::Client).unwrap()
        };
        let (first, second) = (issue(&authority, "a"), issue(&authority, "b"));
        let (list, serial) = authority.revoke(None, &first.certificate_pem).unwrap();
        assert_eq!(serial, first.serial_hex);
        let (list, _) = authority
            .revoke(Some(&list), &second.certificate_pem)
            .unwrap();
        use x509_parser::prelude::FromDer;
        let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(list.as_bytes())
            .unwrap();
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
                .unwrap();
        let serials: Vec<String> = parsed
            .iter_revoked_certificates()
            .map(|entry| hex(entry.raw_serial()))
            .collect();
        assert_eq!(serials, vec![first.serial_hex.clone(), second.serial_hex]);
        assert_eq!(parsed.crl_number().unwrap().to_bytes_be(), vec![2]);
        let foreign = issue(&other, "c");
        assert!(
            authority
                .revoke(Some(&list), &foreign.certificate_pem)
                .is_err()
        );
        assert!(other.revoke(Some(&list), &foreign.certificate_pem).is_err());
    }

    #[test]
    fn a_ca_reloads_from_its_files_and_checks_its_key() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let other = CertificateAuthority::generate("other CA").unwrap();
        assert!(
            CertificateAuthority::from_pem(authority.certificate_pem(), authority.key_pem())
                .is_ok()
        );
        assert!(
            CertificateAuthority::from_pem(authority.certificate_pem(), other.key_pem()).is_err()
        );
        assert_eq!(increment(&[0xff]), vec![1, 0]);
        assert_eq!(increment(&[0, 1]), vec![0, 2]);
    }
}
