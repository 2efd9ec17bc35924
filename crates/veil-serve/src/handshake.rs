//! The handshake every connection starts with: protocol version, role, setting,
//! public-plan hash and mask epoch are checked before any share moves.

use anyhow::{Context, Result, bail};
use veil_net::{Channel, Role};

/// The wire protocol version.
pub const PROTOCOL_VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"VEIL";
/// The `dealer` setting's code.
pub const SETTING_DEALER: u8 = 1;

/// What one side announces. Its `Debug` leaves out the extension, which can hold the
/// server's weight seed.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's role.
    pub role: Role,
    /// The public-plan hash (hex).
    pub plan_hash: String,
    /// The mask epoch (0 when the sender does not know it yet).
    pub epoch: u64,
    /// Extra bytes for this pair of roles (the server's weight seed to the dealer, the
    /// client's batch size to the dealer); empty otherwise.
    pub extension: Vec<u8>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Hello")
            .field("role", &self.role)
            .field("plan_hash", &self.plan_hash)
            .field("epoch", &self.epoch)
            .field(
                "extension",
                &format_args!("<{} bytes>", self.extension.len()),
            )
            .finish()
    }
}

impl Hello {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        bytes.push(SETTING_DEALER);
        bytes.push(self.role.code());
        bytes.extend_from_slice(&self.epoch.to_le_bytes());
        bytes.extend_from_slice(&(self.plan_hash.len() as u16).to_le_bytes());
        bytes.extend_from_slice(self.plan_hash.as_bytes());
        bytes.extend_from_slice(&self.extension);
        bytes
    }

    /// Decodes a peer's hello, checking magic, version and setting.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 20 || &bytes[..4] != MAGIC {
            bail!("the peer does not speak the veil protocol (bad handshake); check the address");
        }
        let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if version != PROTOCOL_VERSION {
            bail!(
                "the peer speaks protocol version {version}, this build speaks {PROTOCOL_VERSION}; upgrade the older side"
            );
        }
        if bytes[8] != SETTING_DEALER {
            bail!(
                "the peer runs setting {}, this build runs the dealer setting",
                bytes[8]
            );
        }
        let role = Role::from_code(bytes[9]).context("the peer announced an unknown role")?;
        let epoch = u64::from_le_bytes(bytes[10..18].try_into().context("short handshake")?);
        let hash_len = usize::from(u16::from_le_bytes([bytes[18], bytes[19]]));
        let hash = bytes
            .get(20..20 + hash_len)
            .context("the handshake is truncated")?;
        let plan_hash = String::from_utf8(hash.to_vec()).context("the plan hash is not text")?;
        Ok(Self {
            role,
            plan_hash,
            epoch,
            extension: bytes[20 + hash_len..].to_vec(),
        })
    }
}

/// Sends ours and checks theirs: version, setting, the expected role and the plan hash.
/// (Over plain TCP roles are claimed, not proven; over TLS the certificate proves them.)
pub fn handshake(channel: &mut impl Channel, ours: &Hello, expected_peer: Role) -> Result<Hello> {
    handshake_any(channel, ours, &[expected_peer])
}

/// Like [`handshake`], for a connection that may come from any of `expected` roles.
pub fn handshake_any(channel: &mut impl Channel, ours: &Hello, expected: &[Role]) -> Result<Hello> {
    let theirs = channel.exchange(&ours.encode()).context("handshake")?;
    let theirs = Hello::decode(&theirs)?;
    if !expected.contains(&theirs.role) {
        bail!(
            "expected a {expected:?} on this connection, the peer says it is a {:?}",
            theirs.role
        );
    }
    if theirs.plan_hash != ours.plan_hash {
        bail!(
            "public-plan hash mismatch (ours {}, theirs {}): both sides must load the same compiled plan",
            ours.plan_hash,
            theirs.plan_hash
        );
    }
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            role: Role::Client,
            plan_hash: "ab".repeat(32),
            epoch: 9,
            extension: vec![1, 2, 3],
        }
    }

    #[test]
    fn hellos_round_trip() {
        assert_eq!(Hello::decode(&hello().encode()).unwrap(), hello());
    }

    #[test]
    fn the_extension_does_not_print() {
        let secret = Hello {
            extension: vec![0xab; 16],
            ..hello()
        };
        assert!(!format!("{secret:?}").contains("171"));
    }

    #[test]
    fn a_wrong_version_setting_or_magic_is_a_clear_error() {
        let mut wrong_version = hello().encode();
        wrong_version[4] = 99;
        let error = Hello::decode(&wrong_version).unwrap_err().to_string();
        assert!(error.contains("protocol version 99"), "{error}");
        let mut wrong_setting = hello().encode();
        wrong_setting[8] = 7;
        assert!(
            Hello::decode(&wrong_setting)
                .unwrap_err()
                .to_string()
                .contains("setting")
        );
        let mut wrong_magic = hello().encode();
        wrong_magic[0] = b'X';
        assert!(
            Hello::decode(&wrong_magic)
                .unwrap_err()
                .to_string()
                .contains("veil protocol")
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let base = hello().encode();
        let mut state = 7u64;
        for round in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut bytes = base.clone();
            let position = (state >> 33) as usize % bytes.len();
            bytes[position] = (state >> 17) as u8;
            if round % 2 == 0 {
                bytes.truncate((state >> 45) as usize % (bytes.len() + 1));
            }
            let _ = Hello::decode(&bytes);
        }
    }
}
