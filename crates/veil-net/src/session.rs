//! Session-tagged frames: every frame of a query carries its 128-bit session id, and a
//! frame that names another session is refused (DESIGN.md §6: "a session id on every
//! message"). The id is public; the tag costs 16 bytes per frame, and they are counted.

use crate::{Channel, ChannelStats, Error, Result};

/// Bytes of the session tag in front of every frame.
pub const SESSION_TAG_BYTES: usize = 16;

/// A channel whose frames carry one session's id.
#[derive(Debug)]
pub struct SessionChannel<C> {
    inner: C,
    session_id: u128,
}

impl<C: Channel> SessionChannel<C> {
    /// Tags every frame sent over `inner` with `session_id` and checks every frame
    /// received.
    pub fn new(inner: C, session_id: u128) -> Self {
        Self { inner, session_id }
    }

    fn tag(&self, payload: &[u8]) -> Vec<u8> {
        let mut framed = Vec::with_capacity(SESSION_TAG_BYTES + payload.len());
        framed.extend_from_slice(&self.session_id.to_le_bytes());
        framed.extend_from_slice(payload);
        framed
    }

    fn untag(&self, mut frame: Vec<u8>) -> Result<Vec<u8>> {
        let ours = self.session_id.to_le_bytes();
        if frame.get(..SESSION_TAG_BYTES) != Some(&ours[..]) {
            return Err(Error::WrongSession);
        }
        frame.drain(..SESSION_TAG_BYTES);
        Ok(frame)
    }
}

impl<C: Channel> Channel for SessionChannel<C> {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        let framed = self.tag(payload);
        self.inner.send(&framed)
    }

    fn recv(&mut self) -> Result<Vec<u8>> {
        let frame = self.inner.recv()?;
        self.untag(frame)
    }

    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        let framed = self.tag(payload);
        let frame = self.inner.exchange(&framed)?;
        self.untag(frame)
    }

    fn stats(&self) -> ChannelStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_pair;

    #[test]
    fn frames_of_the_same_session_pass_and_are_counted() {
        let (first, second) = memory_pair();
        let (mut first, mut second) = (
            SessionChannel::new(first, 0xfeed),
            SessionChannel::new(second, 0xfeed),
        );
        first.send(b"masked").unwrap();
        assert_eq!(second.recv().unwrap(), b"masked");
        second.send(&[]).unwrap();
        assert!(first.recv().unwrap().is_empty());
        assert_eq!(
            first.stats().payload_bytes_sent,
            (SESSION_TAG_BYTES + 6) as u64
        );
    }

    #[test]
    fn a_frame_of_another_session_or_without_a_tag_is_refused() {
        let (first, mut raw) = memory_pair();
        let mut first = SessionChannel::new(first, 1);
        let mut other = 2u128.to_le_bytes().to_vec();
        other.extend_from_slice(b"x");
        raw.send(&other).unwrap();
        assert!(matches!(first.recv(), Err(Error::WrongSession)));
        raw.send(&[1, 2, 3]).unwrap();
        assert!(matches!(first.recv(), Err(Error::WrongSession)));
    }
}
