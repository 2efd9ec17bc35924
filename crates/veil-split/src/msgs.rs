//! The wire messages between the trusted runtime and the worker.
//!
//! Every message is one frame: a tag byte, fixed-width little-endian fields, and arrays
//! as a `u32` count followed by their elements. Decoding checks each count against the
//! bytes actually left before allocating, and the worker checks every shape against the
//! model's public geometry, so a malformed frame is an error, never a panic.

use crate::network::Architecture;
use crate::{Error, Result};

const LOAD_MODEL: u8 = 1;
const CONV_FORWARD: u8 = 2;
const CONV_BACKWARD: u8 = 3;
const BLINDED_FORWARD: u8 = 4;
const WHOLE_FORWARD: u8 = 5;
const WHOLE_TRAIN_STEP: u8 = 6;
const SHUTDOWN: u8 = 7;
const REPLY: u8 = 0x80;
const FAILURE: u8 = 0xff;

/// What the trusted runtime asks of the worker. Its `Debug` prints the kind, the layer
/// and sizes only, never weights, residuals or images.
#[derive(Clone, PartialEq)]
pub enum Request {
    /// The model: its architecture and, per layer, weight and bias (the worker keeps a
    /// copy; the trusted side sends it again after every SGD step).
    LoadModel {
        /// Which architecture.
        architecture: Architecture,
        /// Its first stage's channels (at most [`crate::network::MAX_WIDTH`]).
        width: u16,
        /// Per layer: (weight, bias).
        parameters: Vec<(Vec<f32>, Vec<f32>)>,
    },
    /// Convolve residuals (empty: all zero, answered with an empty output). `keep`: keep
    /// them for the backward.
    ConvForward {
        /// The layer.
        layer: u16,
        /// Samples.
        batch: u32,
        /// Keep the residual for [`Request::ConvBackward`].
        keep: bool,
        /// `batch × c × h × w`, or empty.
        residual: Vec<f32>,
    },
    /// Equations 5–6, the worker's part: the input gradient and the residual's share of
    /// the weight gradient.
    ConvBackward {
        /// The layer.
        layer: u16,
        /// Samples.
        batch: u32,
        /// Whether to compute the input gradient.
        need_input: bool,
        /// `batch × out × h' × w'`.
        grad_output: Vec<f32>,
    },
    /// Slalom: `W · (X + R)` over Z_2^64 on blinded fixed-point inputs.
    BlindedForward {
        /// The layer.
        layer: u16,
        /// Samples.
        batch: u32,
        /// `X + R mod 2^64`, `batch × c × h × w`.
        blinded: Vec<u64>,
    },
    /// The untrusted-only baseline: the whole forward pass on the worker.
    WholeForward {
        /// Samples.
        batch: u32,
        /// `batch × 28 × 28`.
        images: Vec<f32>,
    },
    /// The untrusted-only baseline: a whole SGD step on the worker.
    WholeTrainStep {
        /// Samples.
        batch: u32,
        /// `batch × 28 × 28`.
        images: Vec<f32>,
        /// One per sample.
        labels: Vec<u8>,
        /// SGD step size.
        learning_rate: f32,
    },
    /// Stop serving.
    Shutdown,
}

/// What the worker answers. Its `Debug` prints the kind and sizes only.
#[derive(Clone, PartialEq)]
pub enum Reply {
    /// Arrays of reals (outputs, gradients; an absent input gradient is empty).
    Reals(Vec<Vec<f32>>),
    /// Ring elements (the blinded product).
    Ring(Vec<u64>),
    /// Nothing to return.
    Done,
    /// The worker could not do it (the reason names shapes and layers only).
    Failure(String),
}

impl std::fmt::Debug for Request {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::LoadModel {
                architecture,
                width,
                parameters,
            } => write!(
                formatter,
                "LoadModel {{ {architecture:?}, width {width}, {} layers }}",
                parameters.len()
            ),
            Request::ConvForward {
                layer,
                batch,
                keep,
                residual,
            } => write!(
                formatter,
                "ConvForward {{ layer {layer}, batch {batch}, keep {keep}, {} values }}",
                residual.len()
            ),
            Request::ConvBackward {
                layer,
                batch,
                need_input,
                grad_output,
            } => write!(
                formatter,
                "ConvBackward {{ layer {layer}, batch {batch}, need_input {need_input}, {} values }}",
                grad_output.len()
            ),
            Request::BlindedForward {
                layer,
                batch,
                blinded,
            } => write!(
                formatter,
                "BlindedForward {{ layer {layer}, batch {batch}, {} words }}",
                blinded.len()
            ),
            Request::WholeForward { batch, images } => write!(
                formatter,
                "WholeForward {{ batch {batch}, {} values }}",
                images.len()
            ),
            Request::WholeTrainStep { batch, images, .. } => write!(
                formatter,
                "WholeTrainStep {{ batch {batch}, {} values }}",
                images.len()
            ),
            Request::Shutdown => formatter.write_str("Shutdown"),
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Reals(arrays) => {
                let sizes: Vec<usize> = arrays.iter().map(Vec::len).collect();
                write!(formatter, "Reals({sizes:?} values)")
            }
            Reply::Ring(words) => write!(formatter, "Ring({} words)", words.len()),
            Reply::Done => formatter.write_str("Done"),
            Reply::Failure(reason) => write!(formatter, "Failure({reason:?})"),
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8) -> Writer {
        Writer(vec![tag])
    }
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn f32s(&mut self, values: &[f32]) {
        self.u32(values.len() as u32);
        self.0.reserve(4 * values.len());
        for value in values {
            self.0.extend_from_slice(&value.to_le_bytes());
        }
    }
    fn u64s(&mut self, values: &[u64]) {
        self.u32(values.len() as u32);
        self.0.reserve(8 * values.len());
        for value in values {
            self.0.extend_from_slice(&value.to_le_bytes());
        }
    }
    fn bytes(&mut self, values: &[u8]) {
        self.u32(values.len() as u32);
        self.0.extend_from_slice(values);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

fn truncated() -> Error {
    Error::PeerMisbehaved {
        what: "a message ends early",
    }
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        if count > self.bytes.len() {
            return Err(truncated());
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::PeerMisbehaved {
                what: "a flag is neither 0 nor 1",
            }),
        }
    }
    /// A count, checked against the bytes left at `width` bytes per element.
    fn count(&mut self, width: usize) -> Result<usize> {
        let count = self.u32()? as usize;
        if count
            .checked_mul(width)
            .is_none_or(|bytes| bytes > self.bytes.len())
        {
            return Err(truncated());
        }
        Ok(count)
    }
    fn f32s(&mut self) -> Result<Vec<f32>> {
        let count = self.count(4)?;
        Ok(self
            .take(4 * count)?
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect())
    }
    fn u64s(&mut self) -> Result<Vec<u64>> {
        let count = self.count(8)?;
        Ok(self
            .take(8 * count)?
            .chunks_exact(8)
            .map(|chunk| {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                u64::from_le_bytes(word)
            })
            .collect())
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let count = self.count(1)?;
        Ok(self.take(count)?.to_vec())
    }
    fn finish(self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::PeerMisbehaved {
                what: "a message has trailing bytes",
            })
        }
    }
}

impl Request {
    /// The frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::LoadModel {
                architecture,
                width,
                parameters,
            } => {
                let mut writer = Writer::new(LOAD_MODEL);
                writer.u8(architecture.code());
                writer.u16(*width);
                writer.u32(parameters.len() as u32);
                for (weight, bias) in parameters {
                    writer.f32s(weight);
                    writer.f32s(bias);
                }
                writer.0
            }
            Request::ConvForward {
                layer,
                batch,
                keep,
                residual,
            } => {
                let mut writer = Writer::new(CONV_FORWARD);
                writer.u16(*layer);
                writer.u32(*batch);
                writer.u8(u8::from(*keep));
                writer.f32s(residual);
                writer.0
            }
            Request::ConvBackward {
                layer,
                batch,
                need_input,
                grad_output,
            } => {
                let mut writer = Writer::new(CONV_BACKWARD);
                writer.u16(*layer);
                writer.u32(*batch);
                writer.u8(u8::from(*need_input));
                writer.f32s(grad_output);
                writer.0
            }
            Request::BlindedForward {
                layer,
                batch,
                blinded,
            } => {
                let mut writer = Writer::new(BLINDED_FORWARD);
                writer.u16(*layer);
                writer.u32(*batch);
                writer.u64s(blinded);
                writer.0
            }
            Request::WholeForward { batch, images } => {
                let mut writer = Writer::new(WHOLE_FORWARD);
                writer.u32(*batch);
                writer.f32s(images);
                writer.0
            }
            Request::WholeTrainStep {
                batch,
                images,
                labels,
                learning_rate,
            } => {
                let mut writer = Writer::new(WHOLE_TRAIN_STEP);
                writer.u32(*batch);
                writer.f32s(images);
                writer.bytes(labels);
                writer.f32s(&[*learning_rate]);
                writer.0
            }
            Request::Shutdown => vec![SHUTDOWN],
        }
    }

    /// Parses a frame; any malformation is [`Error::PeerMisbehaved`].
    pub fn decode(frame: &[u8]) -> Result<Request> {
        let (&tag, rest) = frame.split_first().ok_or_else(truncated)?;
        let mut reader = Reader { bytes: rest };
        let request = match tag {
            LOAD_MODEL => {
                let architecture =
                    Architecture::from_code(reader.u8()?).ok_or(Error::PeerMisbehaved {
                        what: "an unknown architecture",
                    })?;
                let width = reader.u16()?;
                if width == 0 || usize::from(width) > crate::network::MAX_WIDTH {
                    return Err(Error::PeerMisbehaved {
                        what: "a model width of 0 or above MAX_WIDTH",
                    });
                }
                let layers = reader.count(8)?;
                let mut parameters = Vec::with_capacity(layers);
                for _ in 0..layers {
                    parameters.push((reader.f32s()?, reader.f32s()?));
                }
                Request::LoadModel {
                    architecture,
                    width,
                    parameters,
                }
            }
            CONV_FORWARD => Request::ConvForward {
                layer: reader.u16()?,
                batch: reader.u32()?,
                keep: reader.bool()?,
                residual: reader.f32s()?,
            },
            CONV_BACKWARD => Request::ConvBackward {
                layer: reader.u16()?,
                batch: reader.u32()?,
                need_input: reader.bool()?,
                grad_output: reader.f32s()?,
            },
            BLINDED_FORWARD => Request::BlindedForward {
                layer: reader.u16()?,
                batch: reader.u32()?,
                blinded: reader.u64s()?,
            },
            WHOLE_FORWARD => Request::WholeForward {
                batch: reader.u32()?,
                images: reader.f32s()?,
            },
            WHOLE_TRAIN_STEP => {
                let batch = reader.u32()?;
                let images = reader.f32s()?;
                let labels = reader.bytes()?;
                let rate = reader.f32s()?;
                let [learning_rate] = rate[..] else {
                    return Err(Error::PeerMisbehaved {
                        what: "a learning rate is not one number",
                    });
                };
                Request::WholeTrainStep {
                    batch,
                    images,
                    labels,
                    learning_rate,
                }
            }
            SHUTDOWN => Request::Shutdown,
            _ => {
                return Err(Error::PeerMisbehaved {
                    what: "an unknown request tag",
                });
            }
        };
        reader.finish()?;
        Ok(request)
    }
}

impl Reply {
    /// The frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Reals(arrays) => {
                let mut writer = Writer::new(REPLY);
                writer.u8(0);
                writer.u32(arrays.len() as u32);
                for array in arrays {
                    writer.f32s(array);
                }
                writer.0
            }
            Reply::Ring(values) => {
                let mut writer = Writer::new(REPLY);
                writer.u8(1);
                writer.u64s(values);
                writer.0
            }
            Reply::Done => vec![REPLY, 2],
            Reply::Failure(reason) => {
                let mut writer = Writer::new(FAILURE);
                writer.bytes(reason.as_bytes());
                writer.0
            }
        }
    }

    /// Parses a frame; any malformation is [`Error::PeerMisbehaved`].
    pub fn decode(frame: &[u8]) -> Result<Reply> {
        let (&tag, rest) = frame.split_first().ok_or_else(truncated)?;
        let mut reader = Reader { bytes: rest };
        if tag == FAILURE {
            let reason = reader.bytes()?;
            reader.finish()?;
            return Ok(Reply::Failure(
                String::from_utf8_lossy(&reason).into_owned(),
            ));
        }
        if tag != REPLY {
            return Err(Error::PeerMisbehaved {
                what: "an unknown reply tag",
            });
        }
        let reply = match reader.u8()? {
            0 => {
                let count = reader.count(4)?;
                let mut arrays = Vec::with_capacity(count);
                for _ in 0..count {
                    arrays.push(reader.f32s()?);
                }
                Reply::Reals(arrays)
            }
            1 => Reply::Ring(reader.u64s()?),
            2 => Reply::Done,
            _ => {
                return Err(Error::PeerMisbehaved {
                    what: "an unknown reply kind",
                });
            }
        };
        reader.finish()?;
        Ok(reply)
    }

    /// The arrays of a [`Reply::Reals`], else an error naming what came instead.
    pub fn into_reals(self, expected: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Reply::Reals(arrays) if arrays.len() == expected => Ok(arrays),
            Reply::Failure(reason) => Err(Error::WorkerFailed { reason }),
            _ => Err(Error::PeerMisbehaved {
                what: "a reply of the wrong kind",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights, residuals, images and products never reach a `Debug` print.
    #[test]
    fn messages_print_sizes_only() {
        let secret = 0.123_456_79_f32;
        let printed = format!(
            "{:?} {:?} {:?} {:?}",
            Request::LoadModel {
                architecture: Architecture::VggSmall,
                width: 16,
                parameters: vec![(vec![secret], vec![secret])],
            },
            Request::ConvForward {
                layer: 1,
                batch: 1,
                keep: false,
                residual: vec![secret; 3],
            },
            Reply::Reals(vec![vec![secret]]),
            Reply::Ring(vec![987_654_321]),
        );
        assert!(!printed.contains("0.1234"), "{printed}");
        assert!(!printed.contains("987654321"), "{printed}");
        assert!(printed.contains("3 values"), "{printed}");
        let low_rank = crate::svd::LowRank {
            channels: 1,
            positions: 1,
            rank: 1,
            identity: false,
            u: vec![secret],
            v: vec![secret],
            confined: 0,
            coordinates: vec![secret],
        };
        let printed = format!("{low_rank:?}");
        assert!(!printed.contains("0.1234"), "{printed}");
    }

    #[test]
    fn requests_and_replies_round_trip_and_truncations_are_errors() {
        let requests = [
            Request::LoadModel {
                architecture: Architecture::Resnet18Small,
                width: 8,
                parameters: vec![(vec![1.0, 2.0], vec![3.0])],
            },
            Request::ConvForward {
                layer: 3,
                batch: 2,
                keep: true,
                residual: vec![0.5; 6],
            },
            Request::ConvBackward {
                layer: 1,
                batch: 1,
                need_input: false,
                grad_output: vec![-1.0],
            },
            Request::BlindedForward {
                layer: 0,
                batch: 1,
                blinded: vec![u64::MAX, 7],
            },
            Request::WholeTrainStep {
                batch: 1,
                images: vec![0.0; 3],
                labels: vec![9],
                learning_rate: 0.1,
            },
            Request::Shutdown,
        ];
        for request in requests {
            let frame = request.encode();
            assert_eq!(Request::decode(&frame).expect("decodes"), request);
            for cut in 0..frame.len() {
                assert!(Request::decode(&frame[..cut]).is_err(), "cut at {cut}");
            }
        }
        for reply in [
            Reply::Reals(vec![vec![1.0], vec![]]),
            Reply::Ring(vec![1, 2]),
            Reply::Done,
            Reply::Failure("layer 3: wrong shape".into()),
        ] {
            let frame = reply.encode();
            assert_eq!(Reply::decode(&frame).expect("decodes"), reply);
        }
        // A count far beyond the frame is refused before anything is allocated.
        let mut huge = vec![CONV_FORWARD, 0, 0, 1, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&huge).is_err());
        // A model width of 0 or above MAX_WIDTH is refused before any model is built.
        for width in [0, crate::network::MAX_WIDTH as u16 + 1, u16::MAX] {
            let frame = Request::LoadModel {
                architecture: Architecture::VggSmall,
                width,
                parameters: Vec::new(),
            }
            .encode();
            assert!(Request::decode(&frame).is_err(), "width {width}");
        }
    }
}
