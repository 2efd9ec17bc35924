//! The handshake every connection starts with: protocol version, role, setting,
//! public-plan hash and mask epoch are checked before any share moves. The hello itself
//! is [`crate::messages::Hello`].

use veil_net::{Channel, Role};

use crate::messages::{Hello, WeightCommitment};
use crate::{Error, PeerMisbehaved, Result};

/// Sends ours and checks theirs: version, setting, the expected role and the plan hash.
/// (Over plain TCP roles are claimed, not proven; over TLS the certificate proves them.)
pub fn handshake(channel: &mut impl Channel, ours: &Hello, expected_peer: Role) -> Result<Hello> {
    handshake_any(channel, ours, &[expected_peer])
}

/// Like [`handshake`], for a connection that may come from any of `expected` roles.
pub fn handshake_any(channel: &mut impl Channel, ours: &Hello, expected: &[Role]) -> Result<Hello> {
    let theirs = channel
        .exchange(&ours.encode())
        .map_err(|cause| match cause {
            veil_net::Error::PeerClosed => Error::ClosedAtHandshake {
                peer: role_list(expected),
            },
            cause => Error::Link {
                what: "handshake",
                cause,
            },
        })?;
    let theirs = Hello::decode(&theirs)?;
    if !expected.contains(&theirs.role) {
        return Err(PeerMisbehaved::UnexpectedRole {
            expected: role_list(expected),
            found: theirs.role,
        }
        .into());
    }
    if theirs.plan_hash != ours.plan_hash {
        return Err(Error::PlanMismatch {
            ours: ours.plan_hash.clone(),
            theirs: theirs.plan_hash,
        });
    }
    Ok(theirs)
}

/// Checks the dealer's hello against the epoch and commitment this side holds: a dealer
/// with no registered server (epoch 0), or one that holds another epoch or another seed
/// for it, would run a session with different weight masks. Used by the server's claims
/// and the client's dealer handshake.
pub(crate) fn check_dealer(dealer: &Hello, epoch: u64, commitment: WeightCommitment) -> Result<()> {
    if dealer.epoch == 0 {
        return Err(Error::DealerNotReady);
    }
    if dealer.epoch != epoch {
        return Err(Error::EpochMismatch {
            peer: epoch,
            ours: dealer.epoch,
        });
    }
    if dealer.commitment != commitment {
        return Err(Error::CommitmentMismatch { epoch });
    }
    Ok(())
}

/// "client or server".
fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|role| role.name())
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(role: Role, plan_hash: &str) -> Hello {
        Hello {
            role,
            plan_hash: plan_hash.into(),
            epoch: 3,
            commitment: crate::messages::WeightCommitment::NONE,
            extension: vec![],
        }
    }

    #[test]
    fn roles_and_plans_are_checked() {
        let (mut a, mut b) = veil_net::memory_pair();
        let peer = std::thread::spawn(move || {
            let _ = handshake(&mut b, &hello(Role::Client, "aa"), Role::Server);
        });
        let error = handshake(&mut a, &hello(Role::Dealer, "aa"), Role::Server)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("expected a server on this connection, the peer says it is a client"),
            "{error}"
        );
        peer.join().unwrap();
        let (mut a, mut b) = veil_net::memory_pair();
        let peer = std::thread::spawn(move || {
            let _ = handshake(&mut b, &hello(Role::Client, "bb"), Role::Server);
        });
        let error = handshake_any(
            &mut a,
            &hello(Role::Server, "aa"),
            &[Role::Client, Role::Server],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("public-plan hash mismatch"), "{error}");
        peer.join().unwrap();
    }
}
