//! In-memory channels for unit tests: two ends of a pair of queues.

use std::sync::mpsc::{Receiver, Sender, channel};

use crate::{Channel, ChannelStats, Error, Result};

/// One end of an in-memory channel. For tests; real parties use [`crate::TcpChannel`].
#[derive(Debug)]
pub struct MemoryChannel {
    outgoing: Sender<Vec<u8>>,
    incoming: Receiver<Vec<u8>>,
    stats: ChannelStats,
}

/// Two connected in-memory channel ends.
pub fn memory_pair() -> (MemoryChannel, MemoryChannel) {
    let (to_second, from_first) = channel();
    let (to_first, from_second) = channel();
    (
        MemoryChannel {
            outgoing: to_second,
            incoming: from_second,
            stats: ChannelStats::default(),
        },
        MemoryChannel {
            outgoing: to_first,
            incoming: from_first,
            stats: ChannelStats::default(),
        },
    )
}

impl Channel for MemoryChannel {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.outgoing
            .send(payload.to_vec())
            .map_err(|_| Error::PeerClosed)?;
        self.stats.record_send(payload.len());
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<u8>> {
        let payload = self.incoming.recv().map_err(|_| Error::PeerClosed)?;
        self.stats.record_receive(payload.len());
        Ok(payload)
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}
