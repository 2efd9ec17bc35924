//! The one role type of a veil deployment: what a party is, on the wire, in its
//! certificate and on the command line.

use std::fmt;
use std::str::FromStr;

/// A party's role in a deployment. Every layer names roles with this type: the TLS
/// certificate (a URI SAN), the handshake (one byte), the services and the command line
/// (the lowercase name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The model owner (P0 of the two-party protocol).
    Server,
    /// The input owner (P1); the only party that learns the output.
    Client,
    /// The third party that makes correlated randomness (the `dealer` setting).
    Dealer,
    /// The third computing party of the `rep3` setting.
    Helper,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Server, Role::Client, Role::Dealer, Role::Helper];

    /// The role's lowercase name (command line, certificate, file names).
    pub fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
            Role::Dealer => "dealer",
            Role::Helper => "helper",
        }
    }

    /// The role from its lowercase name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }

    /// The role's one-byte wire code (the handshake's role field).
    pub fn code(self) -> u8 {
        match self {
            Role::Server => 1,
            Role::Client => 2,
            Role::Dealer => 3,
            Role::Helper => 4,
        }
    }

    /// The role of a wire code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.code() == code)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A name that is no role.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {name:?} (have: server, client, dealer, helper)")]
pub struct UnknownRole {
    /// The name given.
    pub name: String,
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name).ok_or_else(|| UnknownRole { name: name.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip_and_codes_are_fixed() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
            assert_eq!(Role::from_code(role.code()), Some(role));
        }
        // The wire codes are part of the protocol: they never change.
        let codes: Vec<u8> = Role::ALL.iter().map(|role| role.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4]);
        assert_eq!(Role::from_code(0), None);
        assert_eq!(Role::from_code(5), None);
        assert!("Server".parse::<Role>().is_err());
    }
}
