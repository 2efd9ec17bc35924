//! Preprocessing material: what the dealer gives each party for one query, its wire
//! form, and the per-op stream each party derives from the seed it shares with the
//! dealer (cookbook §7.4: the dealer derives one party's material from a seed and sends
//! only corrections). What each step draws from that stream is in the step's file.
//!
//! Every item carries a [`Tag`] (op index, kind, size) that the consuming party checks.
//! Items are moved out as they are consumed, a session's material is accepted once per
//! process ([`SessionLedger`]), and leftovers at the end are an error, so no item can be
//! used twice.
//!
//! A half is either whole (every item in memory, as decoded or generated) or streaming
//! ([`PartyMaterial::into_streaming`]): the dealer makes items in the order the party's
//! steps take them, so a party can run while its half is still arriving. A
//! [`MaterialFeeder`], driven by a thread that reads the dealer's link, hands items over
//! through a bounded queue ([`STREAM_QUEUED_ITEMS`]); the party pulls the next one when
//! a step asks for it, and so holds about one op's material at a time, never a whole
//! query's.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use veil_core::prg::{Prg, SEED_BYTES, Seed};
use zeroize::Zeroize;

use super::codec::{append_words, words_from_bytes};
use crate::{Error, PeerMisbehaved, Result};

/// Which computing party: the server is P0, the client P1 (DESIGN.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartyRole {
    /// P0, the model owner.
    Server,
    /// P1, the input owner; the only party that learns the output.
    Client,
}

impl PartyRole {
    /// 0 for the server, 1 for the client.
    pub fn index(self) -> usize {
        match self {
            PartyRole::Server => 0,
            PartyRole::Client => 1,
        }
    }
}

/// A random 128-bit session id.
pub type SessionId = u128;

/// What a material item is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MaterialKind {
    /// The one-sided product with a fixed weight mask (C₁ for the server).
    WeightProduct = 1,
    /// Precise truncation (r_c, r_b corrections for the server).
    Truncation = 2,
    /// An elementwise Beaver triple (C correction for the server).
    ElementwiseTriple = 3,
    /// A matrix triple (C correction for the server).
    MatrixTriple = 4,
    /// DReLU gate keys.
    Drelu = 5,
    /// ReLU gate keys.
    Relu = 6,
    /// A square pair (C = A² correction for the server).
    SquareTriple = 7,
    /// DReLU gate keys from a point function (`fss::dpf`).
    DreluPoint = 8,
    /// ReLU gate keys from a point function (`fss::dpf`).
    ReluPoint = 9,
    /// Table-lookup keys (a point function over the table's index; sign shares for the
    /// server).
    Lookup = 10,
    /// A bit × value select (shares of the bit mask ρ and of ρ·r for the server).
    BitSelect = 11,
}

impl MaterialKind {
    /// The primitive this material serves (for the per-primitive accounting).
    pub fn primitive(self) -> crate::accounting::Primitive {
        use crate::accounting::Primitive;
        match self {
            MaterialKind::WeightProduct => Primitive::WeightProduct,
            MaterialKind::Truncation => Primitive::Truncation,
            MaterialKind::ElementwiseTriple
            | MaterialKind::MatrixTriple
            | MaterialKind::SquareTriple
            | MaterialKind::BitSelect => Primitive::SecretProduct,
            MaterialKind::Drelu
            | MaterialKind::Relu
            | MaterialKind::DreluPoint
            | MaterialKind::ReluPoint => Primitive::Comparison,
            MaterialKind::Lookup => Primitive::Lookup,
        }
    }
}

impl MaterialKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::WeightProduct,
            2 => Self::Truncation,
            3 => Self::ElementwiseTriple,
            4 => Self::MatrixTriple,
            5 => Self::Drelu,
            6 => Self::Relu,
            7 => Self::SquareTriple,
            8 => Self::DreluPoint,
            9 => Self::ReluPoint,
            10 => Self::Lookup,
            11 => Self::BitSelect,
            _ => return None,
        })
    }
}

/// The label of a material item, checked by the consuming party.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The executor's op index within the query.
    pub op_index: u32,
    /// What the item is for.
    pub kind: MaterialKind,
    /// The number of 64-bit words.
    pub words: u64,
}

impl Tag {
    /// Appends the item header: op index, kind, word count.
    fn encode_into(&self, bytes: &mut Vec<u8>) {
        bytes.extend_from_slice(&self.op_index.to_le_bytes());
        bytes.push(self.kind as u8);
        bytes.extend_from_slice(&self.words.to_le_bytes());
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "op {} {:?} ({} words)",
            self.op_index, self.kind, self.words
        )
    }
}

/// One item of material. Zeroised on drop.
pub struct MaterialItem {
    tag: Tag,
    words: Vec<u64>,
}

impl Drop for MaterialItem {
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

impl MaterialItem {
    pub(crate) fn new(op_index: u32, kind: MaterialKind, words: Vec<u64>) -> Self {
        Self {
            tag: Tag {
                op_index,
                kind,
                words: words.len() as u64,
            },
            words,
        }
    }

    /// The item's tag.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// The item's words, to send to the party it is for.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The wire header of a streamed item: op index, kind, word count.
    pub fn encoded_header(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ITEM_HEADER_BYTES);
        self.tag.encode_into(&mut bytes);
        bytes
    }

    /// Reads a streamed item's header: (op index, kind, word count).
    pub fn decode_header(bytes: &[u8]) -> Result<Tag> {
        let malformed = |what| Error::PeerMisbehaved(PeerMisbehaved::MalformedMaterial(what));
        if bytes.len() != ITEM_HEADER_BYTES {
            return Err(malformed("an item header has the wrong length"));
        }
        Reader { bytes, position: 0 }.tag()
    }
}

/// How many complete items a streaming half queues between its feeder and the party,
/// besides the one the feeder holds while it waits to hand it over. The dealer makes at
/// most one item per party per op and an item is a whole op's material, so with none
/// queued a party holds the item its step is using and the next op's (complete, or
/// arriving): about one layer's material, and the next item is read from the network
/// while the current op runs.
pub const STREAM_QUEUED_ITEMS: usize = 0;

/// What a feeder hands a streaming half.
enum Delivery {
    /// The next item.
    Item(MaterialItem),
    /// The stream's end: every item was delivered.
    End,
    /// The stream failed; the reason is public text (no material).
    Failed(String),
}

/// One party's material for one query session.
pub struct PartyMaterial {
    session_id: SessionId,
    role: PartyRole,
    seed: Seed,
    /// The samples per query the material was made for (public; checked against the
    /// batch a query starts with, so a peer's declared batch never sizes anything).
    batch: u32,
    items: VecDeque<MaterialItem>,
    /// The rest of a streaming half, until its end arrives (`None` when whole).
    source: Option<Receiver<Delivery>>,
}

impl std::fmt::Debug for PartyMaterial {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PartyMaterial")
            .field("role", &self.role)
            .field("items", &self.items.len())
            .field("streaming", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

/// The sending end of a streaming half ([`PartyMaterial::into_streaming`]): whoever
/// reads the dealer's link pushes each item as it completes, then [`Self::finish`]es
/// the stream or [`Self::fail`]s it. A push waits while the party's queue is full, and
/// fails once the party has dropped its half, so a feeder never outlives its consumer.
/// Dropped without either call, the party's next take fails: the stream was cut.
pub struct MaterialFeeder {
    sender: SyncSender<Delivery>,
}

impl std::fmt::Debug for MaterialFeeder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("MaterialFeeder")
    }
}

impl MaterialFeeder {
    /// Hands over the next item, whose words arrived after its header; waits while the
    /// party's queue is full. An error when the words do not match the header, or when
    /// the party no longer takes material.
    pub fn push(&self, tag: Tag, words: Vec<u64>) -> Result<()> {
        if words.len() as u64 != tag.words {
            return Err(PeerMisbehaved::MalformedMaterial(
                "a streamed item's words do not match its header",
            )
            .into());
        }
        self.sender
            .send(Delivery::Item(MaterialItem { tag, words }))
            .map_err(|_| Error::MaterialConsumerGone)
    }

    /// Ends the stream: every item was delivered. An error when the party no longer
    /// takes material.
    pub fn finish(self) -> Result<()> {
        self.sender
            .send(Delivery::End)
            .map_err(|_| Error::MaterialConsumerGone)
    }

    /// Fails the stream: the party's next take returns [`Error::MaterialStreamFailed`]
    /// with `reason` (public text: it must hold no material). Waits until the party
    /// takes it or drops its half (a party always does one or the other: at its next
    /// step, its end or its failure).
    pub fn fail(self, reason: String) {
        // A party that dropped its half needs no reason.
        let _ = self.sender.send(Delivery::Failed(reason));
    }
}

const MAGIC: &[u8; 4] = b"VMAT";
/// 2: the header states the batch size.
const FORMAT_VERSION: u32 = 2;
const HEADER_BYTES: usize = 4 + 4 + 16 + 1 + SEED_BYTES + 4 + 4;
const ITEM_HEADER_BYTES: usize = 4 + 1 + 8;

impl PartyMaterial {
    pub(crate) fn new(session_id: SessionId, role: PartyRole, seed: Seed) -> Self {
        Self {
            session_id,
            role,
            seed,
            batch: 1,
            items: VecDeque::new(),
            source: None,
        }
    }

    /// States the batch size the material is made for (the generator's, before any item).
    pub(crate) fn set_batch(&mut self, batch: u32) {
        self.batch = batch;
    }

    /// The samples per query this material was made for.
    pub fn batch(&self) -> usize {
        self.batch as usize
    }

    /// Makes this half (its header decoded, and any items it holds) a streaming one:
    /// its further items come through the returned feeder, `queued` complete items at
    /// most waiting in between ([`STREAM_QUEUED_ITEMS`]; 0: each push waits for the
    /// party's take), and its end must be the feeder's [`MaterialFeeder::finish`].
    pub fn into_streaming(mut self, queued: usize) -> (Self, MaterialFeeder) {
        let (sender, receiver) = sync_channel(queued);
        self.source = Some(receiver);
        (self, MaterialFeeder { sender })
    }

    /// Whether items are still to come from a feeder.
    pub fn is_streaming(&self) -> bool {
        self.source.is_some()
    }

    /// Waits for a streaming half's next delivery: `true` when an item was queued,
    /// `false` at the end (or for a whole half); the feeder's failure, or a stream cut
    /// before its end, is an error.
    fn pull(&mut self) -> Result<bool> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        let delivery = source.recv();
        match delivery {
            Ok(Delivery::Item(item)) => {
                self.items.push_back(item);
                Ok(true)
            }
            Ok(Delivery::End) => {
                self.source = None;
                Ok(false)
            }
            Ok(Delivery::Failed(reason)) => {
                self.source = None;
                Err(Error::MaterialStreamFailed { reason })
            }
            Err(_) => {
                self.source = None;
                Err(Error::MaterialStreamFailed {
                    reason: "the stream was cut before its end".into(),
                })
            }
        }
    }

    /// Ends the query's use of this material: waits for a streaming half's end (items
    /// still arriving are counted and dropped, zeroised), and fails if any item was left
    /// unused or the stream failed or was cut.
    pub fn finish(&mut self) -> Result<()> {
        let mut left = self.items.len();
        self.items.clear();
        while self.pull()? {
            left += self.items.len();
            self.items.clear();
        }
        if left > 0 {
            return Err(Error::MaterialLeftOver { left });
        }
        Ok(())
    }

    pub(crate) fn push(&mut self, item: MaterialItem) {
        self.items.push_back(item);
    }

    /// Appends a streamed item whose words arrived after its header.
    pub fn push_streamed(&mut self, tag: Tag, words: Vec<u64>) -> Result<()> {
        if words.len() as u64 != tag.words {
            return Err(PeerMisbehaved::MalformedMaterial(
                "a streamed item's words do not match its header",
            )
            .into());
        }
        self.items.push_back(MaterialItem { tag, words });
        Ok(())
    }

    /// The session id (public).
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// The role this material is for.
    pub fn role(&self) -> PartyRole {
        self.role
    }

    /// The seed shared with the dealer for this session.
    pub(crate) fn seed(&self) -> &Seed {
        &self.seed
    }

    /// Items held and not yet consumed (for a streaming half, those that arrived; more
    /// may follow).
    pub fn remaining_items(&self) -> usize {
        self.items.len()
    }

    /// Bytes of the wire form (for a streaming half, of the items held now).
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES
            + self
                .items
                .iter()
                .map(|item| ITEM_HEADER_BYTES + 8 * item.words.len())
                .sum::<usize>()
    }

    /// The kind of the next item if it is op `op_index`'s (a streaming half waits for it
    /// to arrive), so that a step the dealer may serve in more than one form (a
    /// comparison: DCF or point-function keys) follows the form it was given.
    pub(crate) fn next_kind(&mut self, op_index: u32) -> Result<Option<MaterialKind>> {
        if self.items.is_empty() {
            self.pull()?;
        }
        Ok(self
            .items
            .front()
            .filter(|item| item.tag.op_index == op_index)
            .map(|item| item.tag.kind))
    }

    /// Takes the next item, which must carry `expected`'s tag; a streaming half waits
    /// for it to arrive.
    pub(crate) fn take(&mut self, expected: Tag) -> Result<Vec<u64>> {
        if self.items.is_empty() {
            self.pull()?;
        }
        match self.items.front() {
            Some(item) if item.tag == expected => {}
            other => {
                return Err(Error::MaterialMismatch {
                    expected,
                    found: other.map_or_else(|| "nothing".into(), |item| item.tag.to_string()),
                });
            }
        }
        let mut item = self.items.pop_front().ok_or(Error::MaterialMismatch {
            expected,
            found: "nothing".into(),
        })?;
        Ok(std::mem::take(&mut item.words))
    }

    /// The wire form (sent by the dealer to this material's party only).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.encoded_len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.session_id.to_le_bytes());
        bytes.push(self.role.index() as u8);
        bytes.extend_from_slice(&self.seed.to_bytes());
        bytes.extend_from_slice(&self.batch.to_le_bytes());
        bytes.extend_from_slice(&(self.items.len() as u32).to_le_bytes());
        for item in &self.items {
            item.tag.encode_into(&mut bytes);
            append_words(&mut bytes, &item.words);
        }
        bytes
    }

    /// Decodes the wire form, validating every length before allocating.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let malformed = |what| Error::PeerMisbehaved(PeerMisbehaved::MalformedMaterial(what));
        if bytes.len() < HEADER_BYTES {
            return Err(malformed("shorter than its header"));
        }
        if &bytes[..4] != MAGIC {
            return Err(malformed("bad magic"));
        }
        let mut reader = Reader { bytes, position: 4 };
        if reader.u32()? != FORMAT_VERSION {
            return Err(malformed("unsupported format version"));
        }
        let session_id = u128::from_le_bytes(reader.array::<16>()?);
        let role = match reader.u8()? {
            0 => PartyRole::Server,
            1 => PartyRole::Client,
            _ => return Err(malformed("unknown role")),
        };
        let seed = Seed::from_bytes(reader.array::<SEED_BYTES>()?);
        let batch = reader.u32()?;
        if batch == 0 {
            return Err(malformed("a batch of 0 samples"));
        }
        let count = reader.u32()? as usize;
        let mut items = VecDeque::new();
        for _ in 0..count {
            let tag = reader.tag()?;
            let byte_len = usize::try_from(tag.words)
                .ok()
                .and_then(|words| words.checked_mul(8))
                .filter(|&len| len <= bytes.len() - reader.position)
                .ok_or(malformed("an item is longer than the message"))?;
            let words = words_from_bytes(&bytes[reader.position..reader.position + byte_len]);
            reader.position += byte_len;
            items.push_back(MaterialItem { tag, words });
        }
        if reader.position != bytes.len() {
            return Err(malformed("trailing bytes after the last item"));
        }
        Ok(Self {
            session_id,
            role,
            seed,
            batch,
            items,
            source: None,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.position + N;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(Error::PeerMisbehaved(PeerMisbehaved::MalformedMaterial(
                "truncated",
            )))?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        self.position = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// An item header: op index, kind, word count.
    fn tag(&mut self) -> Result<Tag> {
        let op_index = self.u32()?;
        let kind = MaterialKind::from_byte(self.u8()?).ok_or(Error::PeerMisbehaved(
            PeerMisbehaved::MalformedMaterial("unknown item kind"),
        ))?;
        let words = self.u64()?;
        Ok(Tag {
            op_index,
            kind,
            words,
        })
    }
}

/// The most session ids a [`SessionLedger`] remembers (32 bytes each with its order:
/// 32 MiB at most).
pub const LEDGER_SESSIONS: usize = 1 << 20;

/// The sessions whose material a party has accepted. A session id seen twice is
/// refused, so material replayed (by a bug, a retry or an attacker) is never used again.
///
/// Bounded: it remembers the last [`LEDGER_SESSIONS`] ids and forgets the oldest. Ids
/// are 128 bits from the dealer's OS RNG, so a fresh one repeats an old one with
/// negligible probability; what the bound gives up is refusing a replay of material
/// more than a million sessions old, which only the dealer (trusted not to collude, and
/// the only holder of the seeds) could send over the authenticated channel.
#[derive(Clone, Debug, Default)]
pub struct SessionLedger {
    consumed: Arc<Mutex<Consumed>>,
}

#[derive(Debug, Default)]
struct Consumed {
    ids: HashSet<SessionId>,
    order: VecDeque<SessionId>,
}

impl SessionLedger {
    /// Records `session_id` as consumed; an error if it already was.
    pub fn consume(&self, session_id: SessionId) -> Result<()> {
        let mut consumed = self.consumed.lock().map_err(|_| Error::MaterialReused)?;
        if !consumed.ids.insert(session_id) {
            return Err(Error::MaterialReused);
        }
        consumed.order.push_back(session_id);
        while consumed.order.len() > LEDGER_SESSIONS {
            if let Some(oldest) = consumed.order.pop_front() {
                consumed.ids.remove(&oldest);
            }
        }
        Ok(())
    }

    /// Session ids remembered now.
    pub fn len(&self) -> usize {
        self.consumed
            .lock()
            .map_or(0, |consumed| consumed.ids.len())
    }

    /// Whether no session was consumed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stream for one op of one session: the party's seed, domain-separated by op index.
pub(crate) fn op_stream(seed: &Seed, op_index: u32) -> Prg {
    Prg::new(&seed.derive("veil/op", &[u64::from(op_index)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_core::sampling::test_seed_or;

    fn sample() -> PartyMaterial {
        let mut material =
            PartyMaterial::new(42, PartyRole::Server, Seed::dangerous_from_test_value(1));
        material.push(MaterialItem::new(
            0,
            MaterialKind::WeightProduct,
            vec![1, 2, 3],
        ));
        material.push(MaterialItem::new(1, MaterialKind::Truncation, vec![4, 5]));
        material
    }

    #[test]
    fn wire_form_round_trips_and_rejects_damage() {
        let bytes = sample().encode();
        let mut decoded = PartyMaterial::decode(&bytes).unwrap();
        assert_eq!(decoded.session_id(), 42);
        let tag = Tag {
            op_index: 0,
            kind: MaterialKind::WeightProduct,
            words: 3,
        };
        assert_eq!(decoded.take(tag).unwrap(), vec![1, 2, 3]);
        for cut in 0..bytes.len() {
            assert!(PartyMaterial::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(PartyMaterial::decode(&longer).is_err());
    }

    #[test]
    fn items_are_taken_once_and_in_order() {
        let mut material = sample();
        let first = Tag {
            op_index: 0,
            kind: MaterialKind::WeightProduct,
            words: 3,
        };
        let second = Tag {
            op_index: 1,
            kind: MaterialKind::Truncation,
            words: 2,
        };
        assert!(matches!(
            material.take(second),
            Err(Error::MaterialMismatch { .. })
        ));
        material.take(first).unwrap();
        assert!(matches!(
            material.take(first),
            Err(Error::MaterialMismatch { .. })
        ));
        material.take(second).unwrap();
        assert!(matches!(
            material.take(second),
            Err(Error::MaterialMismatch { .. })
        ));
    }

    /// The tags and words of `sample()`'s items, in order.
    fn sample_items() -> Vec<(Tag, Vec<u64>)> {
        vec![
            (
                Tag {
                    op_index: 0,
                    kind: MaterialKind::WeightProduct,
                    words: 3,
                },
                vec![1, 2, 3],
            ),
            (
                Tag {
                    op_index: 1,
                    kind: MaterialKind::Truncation,
                    words: 2,
                },
                vec![4, 5],
            ),
        ]
    }

    /// A header-only half of `sample()`'s session, streaming, two items queued at most.
    fn streaming() -> (PartyMaterial, MaterialFeeder) {
        PartyMaterial::new(42, PartyRole::Server, Seed::dangerous_from_test_value(1))
            .into_streaming(2)
    }

    #[test]
    fn a_streamed_half_yields_what_a_whole_one_does() {
        let (mut streamed, feeder) = streaming();
        let feeding = std::thread::spawn(move || {
            for (tag, words) in sample_items() {
                feeder.push(tag, words)?;
            }
            feeder.finish()
        });
        let mut whole = sample();
        for (tag, _) in sample_items() {
            assert_eq!(streamed.take(tag).unwrap(), whole.take(tag).unwrap());
        }
        streamed.finish().unwrap();
        whole.finish().unwrap();
        feeding.join().unwrap().unwrap();
        assert!(!streamed.is_streaming());
    }

    #[test]
    fn a_feeder_waits_for_the_party_within_its_bound() {
        let (mut streamed, feeder) =
            PartyMaterial::new(42, PartyRole::Client, Seed::dangerous_from_test_value(1))
                .into_streaming(1);
        let pushed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&pushed);
        let feeding = std::thread::spawn(move || {
            for op_index in 0..10 {
                let tag = Tag {
                    op_index,
                    kind: MaterialKind::Drelu,
                    words: 1,
                };
                feeder.push(tag, vec![u64::from(op_index)])?;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            feeder.finish()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // One queued; the feeder waits on the second.
        assert!(pushed.load(std::sync::atomic::Ordering::SeqCst) <= 1);
        for op_index in 0..10 {
            let tag = Tag {
                op_index,
                kind: MaterialKind::Drelu,
                words: 1,
            };
            assert_eq!(streamed.take(tag).unwrap(), vec![u64::from(op_index)]);
        }
        streamed.finish().unwrap();
        feeding.join().unwrap().unwrap();
    }

    #[test]
    fn a_failed_or_cut_stream_is_an_error_from_take() {
        let [(first, first_words), (second, _)]: [(Tag, Vec<u64>); 2] =
            sample_items().try_into().unwrap();
        let (mut streamed, feeder) = streaming();
        feeder.push(first, first_words.clone()).unwrap();
        feeder.fail("the dealer's link closed".into());
        streamed.take(first).unwrap();
        let error = streamed.take(second).unwrap_err();
        assert!(
            matches!(&error, Error::MaterialStreamFailed { reason } if reason.contains("link closed")),
            "{error}"
        );
        // The feeder dropped without an end: cut.
        let (mut streamed, feeder) = streaming();
        let feeding = std::thread::spawn(move || feeder.push(first, first_words));
        feeding.join().unwrap().unwrap();
        streamed.take(first).unwrap();
        assert!(matches!(
            streamed.take(second),
            Err(Error::MaterialStreamFailed { .. })
        ));
        // A missing end is an error at the query's end too.
        let (mut streamed, feeder) = streaming();
        drop(feeder);
        assert!(matches!(
            streamed.finish(),
            Err(Error::MaterialStreamFailed { .. })
        ));
        // A feeder's item with the wrong word count is refused.
        let (_streamed, feeder) = streaming();
        assert!(feeder.push(first, vec![1]).is_err());
    }

    #[test]
    fn items_left_in_a_stream_are_an_error_at_the_end() {
        let (mut streamed, feeder) = streaming();
        let feeding = std::thread::spawn(move || {
            for (tag, words) in sample_items() {
                feeder.push(tag, words)?;
            }
            feeder.finish()
        });
        let (first, _) = sample_items()[0].clone();
        streamed.take(first).unwrap();
        assert!(matches!(
            streamed.finish(),
            Err(Error::MaterialLeftOver { left: 1 })
        ));
        feeding.join().unwrap().unwrap();
    }

    #[test]
    fn dropping_the_half_stops_its_feeder() {
        let (mut streamed, feeder) = streaming();
        let feeding = std::thread::spawn(move || {
            let mut op_index = 0;
            loop {
                let tag = Tag {
                    op_index,
                    kind: MaterialKind::Relu,
                    words: 1,
                };
                if let Err(error) = feeder.push(tag, vec![7]) {
                    return (op_index, error);
                }
                op_index += 1;
            }
        });
        let tag = Tag {
            op_index: 0,
            kind: MaterialKind::Relu,
            words: 1,
        };
        streamed.take(tag).unwrap();
        drop(streamed);
        let (pushed, error) = feeding.join().unwrap();
        assert!(matches!(error, Error::MaterialConsumerGone), "{error}");
        assert!(pushed <= 1 + 2, "pushed {pushed}");
    }

    #[test]
    fn the_ledger_refuses_a_session_twice() {
        let ledger = SessionLedger::default();
        ledger.consume(7).unwrap();
        ledger.consume(8).unwrap();
        assert!(matches!(ledger.consume(7), Err(Error::MaterialReused)));
    }

    #[test]
    fn the_ledger_is_bounded_and_forgets_the_oldest_first() {
        let ledger = SessionLedger::default();
        for id in 0..(LEDGER_SESSIONS as u128 + 10) {
            ledger.consume(id).unwrap();
        }
        assert_eq!(ledger.len(), LEDGER_SESSIONS);
        // The newest are still refused; the ten oldest were forgotten.
        assert!(matches!(
            ledger.consume(LEDGER_SESSIONS as u128 + 9),
            Err(Error::MaterialReused)
        ));
        assert!(matches!(ledger.consume(10), Err(Error::MaterialReused)));
        ledger.consume(0).unwrap();
    }

    #[test]
    fn the_header_states_the_batch() {
        let mut material = sample();
        material.set_batch(12);
        let decoded = PartyMaterial::decode(&material.encode()).unwrap();
        assert_eq!(decoded.batch(), 12);
        let mut bytes = material.encode();
        // The batch sits after magic, version, session, role and seed.
        let at = 4 + 4 + 16 + 1 + SEED_BYTES;
        bytes[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(PartyMaterial::decode(&bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let seed = test_seed_or(1);
        let mut state = seed.value();
        let base = sample().encode();
        for round in 0..5000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut bytes = base.clone();
            let position = (state >> 33) as usize % bytes.len();
            bytes[position] ^= (state >> 7) as u8 | 1;
            if round % 3 == 0 {
                bytes.truncate((state >> 40) as usize % bytes.len());
            }
            let _ = PartyMaterial::decode(&bytes);
        }
    }
}
