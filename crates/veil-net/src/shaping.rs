//! Traffic shaping for simulated networks (DESIGN.md §7), applied on the receive side:
//! a frame of b bytes that arrives at t becomes readable no earlier than
//! max(t, link_free) + b/bandwidth + RTT/2, with one `link_free` clock per direction.
//! Senders never sleep; a reader thread stamps each frame's arrival, so compute on the
//! receiving side overlaps the simulated transfer.

use std::time::{Duration, Instant};

/// A simulated network between two parties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkProfile {
    /// No shaping: the loopback as it is.
    Local,
    /// 3 Gbit/s, 1 ms round trip.
    Lan,
    /// 400 Mbit/s, 40 ms round trip.
    Wan,
}

impl NetworkProfile {
    /// Parses `local`, `lan` or `wan`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "local" => Self::Local,
            "lan" => Self::Lan,
            "wan" => Self::Wan,
            _ => return None,
        })
    }

    /// The profile's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Lan => "lan",
            Self::Wan => "wan",
        }
    }

    /// Bits per second, or `None` when unshaped.
    pub fn bandwidth_bits_per_second(self) -> Option<f64> {
        match self {
            Self::Local => None,
            Self::Lan => Some(3e9),
            Self::Wan => Some(400e6),
        }
    }

    /// The round-trip time.
    pub fn round_trip(self) -> Duration {
        match self {
            Self::Local => Duration::ZERO,
            Self::Lan => Duration::from_millis(1),
            Self::Wan => Duration::from_millis(40),
        }
    }
}

/// The receive-side clock of one direction of a link.
#[derive(Debug)]
pub(crate) struct LinkClock {
    profile: NetworkProfile,
    link_free: Option<Instant>,
}

impl LinkClock {
    pub(crate) fn new(profile: NetworkProfile) -> Self {
        Self {
            profile,
            link_free: None,
        }
    }

    /// When a frame of `bytes` (headers included) that arrived at `arrival` may be read.
    pub(crate) fn readable_at(&mut self, arrival: Instant, bytes: usize) -> Instant {
        let Some(bandwidth) = self.profile.bandwidth_bits_per_second() else {
            return arrival;
        };
        let start = self.link_free.map_or(arrival, |free| free.max(arrival));
        let transfer = Duration::from_secs_f64(bytes as f64 * 8.0 / bandwidth);
        self.link_free = Some(start + transfer);
        start + transfer + self.profile.round_trip() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_definition() {
        let mut clock = LinkClock::new(NetworkProfile::Wan);
        let t = Instant::now();
        // 5 MB at 400 Mbit/s is 100 ms, plus half of 40 ms.
        let first = clock.readable_at(t, 5_000_000);
        assert_eq!(first - t, Duration::from_millis(120));
        // A second frame arriving at once queues behind the first on the link.
        let second = clock.readable_at(t, 5_000_000);
        assert_eq!(second - t, Duration::from_millis(220));
        // One arriving after the link is free starts at its own arrival.
        let later = t + Duration::from_secs(1);
        assert_eq!(
            clock.readable_at(later, 0) - later,
            Duration::from_millis(20)
        );
        let mut local = LinkClock::new(NetworkProfile::Local);
        assert_eq!(local.readable_at(t, 1 << 30), t);
    }
}
