//! The plan format: `NAME.plan` (public part + weights, for the server) and
//! `NAME.public.plan` (public part only, for the client and the dealer).
//!
//! Layout (little-endian):
//! `"VEILPLAN"` · format version u32 · kind u8 (1 full, 2 public) · header length u64 ·
//! header (JSON of [`PublicPlan`]) · weights length u64 · weights · SHA-256 of
//! everything before it. The weights section holds f32 values: in a full plan the
//! parameters in the order of `parameters`, then a text plan's public
//! [`TextTables`]; in a public plan only those tables (nothing for other plans).
//!
//! The public-plan hash, which parties compare in their handshake, is the SHA-256 of
//! the header bytes: the same in both files. The header holds the tables' own SHA-256,
//! so the hash binds them too.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ir::{Graph, Op};
use crate::text::{TextFrontEnd, TextTables};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"VEILPLAN";
/// The plan format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const KIND_FULL: u8 = 1;
const KIND_PUBLIC: u8 = 2;

/// What a parameter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParameterKind {
    /// A matrix multiplied with a secret (one-sided fixed-mask product).
    Weight,
    /// A vector added after a product.
    Bias,
}

/// A parameter's public description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterInfo {
    /// The name the graph uses.
    pub name: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// Weight or bias.
    pub kind: ParameterKind,
}

/// What the client is allowed to learn (DESIGN.md §1: only this is reconstructed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputPolicy {
    /// The output tensor (logits), to the client only.
    Logits,
    /// Only the index of each row's largest output (a secure argmax: a comparison tree
    /// whose comparisons run on `bits` bits).
    Label {
        /// Comparison bit-width for the argmax.
        bits: u32,
    },
}

/// The public part of a plan: everything but the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicPlan {
    /// The model's name.
    pub name: String,
    /// Fixed-point fractional bits.
    pub fractional_bits: u32,
    /// The approximation policy (`exact` is the only one so far).
    pub approximation: String,
    /// What the client learns.
    pub output_policy: OutputPolicy,
    /// The graph.
    pub graph: Graph,
    /// Every parameter, in the order the weights are stored.
    pub parameters: Vec<ParameterInfo>,
    /// The largest magnitude a real input may have, set by calibration (headroom times
    /// the largest calibration input): the comparisons' bit-widths were chosen for
    /// inputs in that range, and one beyond it could wrap a comparison, which would
    /// give a wrong answer and, under `logits`, information about pre-activations. The
    /// client refuses such an input before the query starts. Absent: no bound beyond
    /// the fixed-point range (uncalibrated plans compare at full width).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_bound: Option<f32>,
    /// For plans over token sequences: what the client computes in the clear before
    /// sharing and after reconstruction (absent for other plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextFrontEnd>,
}

impl PublicPlan {
    fn header_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|error| Error::InvalidHeader {
            reason: error.to_string(),
        })
    }

    /// The public-plan hash (hex), compared in every handshake.
    pub fn hash_hex(&self) -> Result<String> {
        let digest = Sha256::digest(self.header_bytes()?);
        Ok(digest.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// The fixed-point codec.
    pub fn fixed_point(&self) -> Result<veil_core::FixedPoint> {
        Ok(veil_core::FixedPoint::new(self.fractional_bits)?)
    }

    /// Checks the graph against the parameter list.
    pub fn validate(&self) -> Result<()> {
        self.graph.infer_shapes(1)?;
        for node in &self.graph.nodes {
            let (weight, bias, weight_shape, outputs) = match &node.op {
                Op::Linear {
                    weight,
                    bias,
                    in_features,
                    out_features,
                } => (
                    weight,
                    bias.as_deref(),
                    vec![*in_features, *out_features],
                    *out_features,
                ),
                Op::Conv2d {
                    weight,
                    bias,
                    in_channels,
                    out_channels,
                    kernel,
                    ..
                } => (
                    weight,
                    bias.as_deref(),
                    vec![*out_channels, *in_channels, *kernel, *kernel],
                    *out_channels,
                ),
                Op::LayerNorm {
                    weight,
                    bias,
                    features,
                    ..
                } => (weight, Some(bias.as_str()), vec![*features], *features),
                Op::Input { .. }
                | Op::MaxPool2d { .. }
                | Op::AvgPool2d { .. }
                | Op::Relu { .. }
                | Op::Gelu { .. }
                | Op::GeluTable { .. }
                | Op::Softmax { .. }
                | Op::MatMul { .. }
                | Op::Scale { .. }
                | Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Flatten
                | Op::Add
                | Op::MaskScores { .. }
                | Op::Tanh { .. }
                | Op::FirstToken
                | Op::MaskedSum
                | Op::Quadratic { .. }
                | Op::QuadSoftmax { .. }
                | Op::ReluSoftmax { .. } => continue,
            };
            self.expect_parameter(weight, weight_shape, ParameterKind::Weight)?;
            if let Some(bias) = bias {
                self.expect_parameter(bias, vec![outputs], ParameterKind::Bias)?;
            }
        }
        Ok(())
    }

    fn expect_parameter(&self, name: &str, shape: Vec<usize>, kind: ParameterKind) -> Result<()> {
        let info = self
            .parameters
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::MissingParameter { name: name.into() })?;
        if info.shape != shape || info.kind != kind {
            return Err(Error::ParameterShape {
                name: name.into(),
                expected: shape,
                found: info.shape.clone(),
            });
        }
        Ok(())
    }

    /// Values per sample over all the client's inputs: a flat input buffer holds, for
    /// each input in graph order, `batch × ` its per-sample length.
    pub fn input_len(&self) -> usize {
        self.graph.inputs().iter().map(|slot| slot.len()).sum()
    }

    /// Splits a flat buffer of `batch` samples (see [`Self::input_len`]) into one slice
    /// per input, checking its length.
    pub fn split_inputs<'a, T>(&self, values: &'a [T], batch: usize) -> Result<Vec<&'a [T]>> {
        let inputs = self.graph.inputs();
        let per_sample = self.input_len();
        if per_sample.checked_mul(batch) != Some(values.len()) || batch == 0 {
            return Err(Error::InputShape {
                expected: per_sample,
                found: values.len(),
                shapes: inputs
                    .iter()
                    .map(|slot| (slot.name.to_string(), slot.shape.to_vec()))
                    .collect(),
            });
        }
        let mut rest = values;
        let mut parts = Vec::with_capacity(inputs.len());
        for slot in &inputs {
            let (part, tail) = rest.split_at(slot.len() * batch);
            parts.push(part);
            rest = tail;
        }
        Ok(parts)
    }
}

/// A full plan: the public part and the weights (secret, server only).
#[derive(Clone, PartialEq)]
pub struct Plan {
    /// The public part.
    pub public: PublicPlan,
    /// Weights by name, row-major f32 (secret).
    pub weights: BTreeMap<String, Vec<f32>>,
    /// A text plan's public embedding tables (present exactly when `public.text` is).
    pub text_tables: Option<TextTables>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Plan")
            .field("public", &self.public)
            .field(
                "weights",
                &format_args!("<{} secret tensors>", self.weights.len()),
            )
            .field("text_tables", &self.text_tables)
            .finish()
    }
}

fn encode(kind: u8, header: &[u8], weights: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + 4 + 1 + 16 + header.len() + weights.len() + 32);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.push(kind);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&(weights.len() as u64).to_le_bytes());
    bytes.extend_from_slice(weights);
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

/// Splits a plan file into (kind, header, weights), checking everything.
fn decode(bytes: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Err(Error::Truncated { what: "magic" });
        }
        return Err(Error::BadMagic);
    }
    let mut position = MAGIC.len();
    let mut take = |len: usize, what: &'static str| -> Result<&[u8]> {
        let end = position
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or(Error::Truncated { what })?;
        let slice = &bytes[position..end];
        position = end;
        Ok(slice)
    };
    let version = u32::from_le_bytes(
        take(4, "version")?
            .try_into()
            .map_err(|_| Error::Truncated { what: "version" })?,
    );
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let kind = take(1, "kind")?[0];
    let header_len =
        u64::from_le_bytes(
            take(8, "header length")?
                .try_into()
                .map_err(|_| Error::Truncated {
                    what: "header length",
                })?,
        );
    let header = take(
        usize::try_from(header_len).map_err(|_| Error::Truncated { what: "header" })?,
        "header",
    )?;
    let weights_len = u64::from_le_bytes(take(8, "weights length")?.try_into().map_err(|_| {
        Error::Truncated {
            what: "weights length",
        }
    })?);
    let weights = take(
        usize::try_from(weights_len).map_err(|_| Error::Truncated { what: "weights" })?,
        "weights",
    )?;
    let checksum = take(32, "checksum")?;
    let body_end = bytes.len() - 32;
    if checksum.as_ptr() != bytes[body_end..].as_ptr() {
        // Bytes after the checksum: the file was damaged or concatenated.
        return Err(Error::ChecksumMismatch);
    }
    if Sha256::digest(&bytes[..body_end]).as_slice() != checksum {
        return Err(Error::ChecksumMismatch);
    }
    Ok((kind, header, weights))
}

fn parse_header(header: &[u8]) -> Result<PublicPlan> {
    let public: PublicPlan =
        serde_json::from_slice(header).map_err(|error| Error::InvalidHeader {
            reason: error.to_string(),
        })?;
    public.validate()?;
    Ok(public)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

impl PublicPlan {
    /// The `NAME.public.plan` bytes, with a text plan's tables.
    pub fn to_bytes(&self, tables: Option<&TextTables>) -> Result<Vec<u8>> {
        self.check_tables(tables)?;
        let tables = tables.map(TextTables::to_bytes).unwrap_or_default();
        Ok(encode(KIND_PUBLIC, &self.header_bytes()?, &tables))
    }

    /// Reads a public plan from bytes (a full plan's public part is accepted too).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, header, _) = decode(bytes)?;
        parse_header(header)
    }

    /// Reads a public plan and, for a text plan, its tables (checked against the hash
    /// in the header) from a public plan's bytes.
    pub fn from_bytes_with_tables(bytes: &[u8]) -> Result<(Self, Option<TextTables>)> {
        let (kind, header, section) = decode(bytes)?;
        let public = parse_header(header)?;
        let tables = match &public.text {
            None => None,
            Some(_) if kind != KIND_PUBLIC => {
                // A full plan's section starts with the weights.
                return Ok((public, Plan::from_bytes(bytes)?.text_tables));
            }
            Some(front) => Some(TextTables::from_bytes(front, section)?),
        };
        Ok((public, tables))
    }

    /// Reads a public plan file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_bytes(&read_file(path)?)
    }

    /// Reads a public plan file with a text plan's tables.
    pub fn load_with_tables(path: &Path) -> Result<(Self, Option<TextTables>)> {
        Self::from_bytes_with_tables(&read_file(path)?)
    }

    /// Writes a public plan file (with a text plan's tables).
    pub fn save(&self, path: &Path, tables: Option<&TextTables>) -> Result<()> {
        write_file(path, &self.to_bytes(tables)?)
    }

    /// Tables are given exactly for text plans, and match the header's hash.
    fn check_tables(&self, tables: Option<&TextTables>) -> Result<()> {
        match (&self.text, tables) {
            (None, None) => Ok(()),
            (Some(front), Some(tables)) if tables.sha256_hex() == front.tables_sha256 => Ok(()),
            (Some(_), Some(_)) => Err(Error::InvalidHeader {
                reason: "text tables: the tables do not match the hash in the header".into(),
            }),
            (Some(_), None) => Err(Error::InvalidHeader {
                reason: "text tables: a text plan needs its embedding tables".into(),
            }),
            (None, Some(_)) => Err(Error::InvalidHeader {
                reason: "text tables: given for a plan that is not a text plan".into(),
            }),
        }
    }
}

impl Plan {
    /// Builds a plan, checking every parameter's presence and size.
    pub fn new(public: PublicPlan, weights: BTreeMap<String, Vec<f32>>) -> Result<Self> {
        public.validate()?;
        for info in &public.parameters {
            let values = weights
                .get(&info.name)
                .ok_or_else(|| Error::MissingParameter {
                    name: info.name.clone(),
                })?;
            if values.len() != info.shape.iter().product::<usize>() {
                return Err(Error::ParameterShape {
                    name: info.name.clone(),
                    expected: info.shape.clone(),
                    found: vec![values.len()],
                });
            }
        }
        Ok(Self {
            public,
            weights,
            text_tables: None,
        })
    }

    /// The plan with a text plan's public tables, checked against its header.
    pub fn with_text_tables(mut self, tables: TextTables) -> Result<Self> {
        self.public.check_tables(Some(&tables))?;
        self.text_tables = Some(tables);
        Ok(self)
    }

    /// The `NAME.plan` bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut weights = Vec::new();
        for info in &self.public.parameters {
            for value in &self.weights[&info.name] {
                weights.extend_from_slice(&value.to_le_bytes());
            }
        }
        self.public.check_tables(self.text_tables.as_ref())?;
        if let Some(tables) = &self.text_tables {
            weights.extend_from_slice(&tables.to_bytes());
        }
        Ok(encode(KIND_FULL, &self.public.header_bytes()?, &weights))
    }

    /// Reads a full plan from bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (kind, header, weight_bytes) = decode(bytes)?;
        if kind != KIND_FULL {
            return Err(Error::WrongPlanKind {
                expected: "full",
                found: "public",
            });
        }
        let public = parse_header(header)?;
        let total: usize = public
            .parameters
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        let (weight_bytes, table_bytes) = if public.text.is_some() {
            weight_bytes.split_at(weight_bytes.len().min(total * 4))
        } else {
            (weight_bytes, &[][..])
        };
        if weight_bytes.len() != total * 4 {
            return Err(Error::InvalidHeader {
                reason: format!(
                    "the header describes {total} weights but the file holds {} bytes of them",
                    weight_bytes.len()
                ),
            });
        }
        let tables = match &public.text {
            Some(front) => Some(TextTables::from_bytes(front, table_bytes)?),
            None => None,
        };
        let mut values = weight_bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        let mut weights = BTreeMap::new();
        for info in &public.parameters {
            let count: usize = info.shape.iter().product();
            weights.insert(info.name.clone(), values.by_ref().take(count).collect());
        }
        let plan = Self::new(public, weights)?;
        match tables {
            Some(tables) => plan.with_text_tables(tables),
            None => Ok(plan),
        }
    }

    /// Reads a full plan file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_bytes(&read_file(path)?)
    }

    /// Writes `NAME.plan` and `NAME.public.plan` beside each other; returns their paths.
    pub fn save(&self, directory: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        let full = directory.join(format!("{}.plan", self.public.name));
        let public = directory.join(format!("{}.public.plan", self.public.name));
        write_file(&full, &self.to_bytes()?)?;
        self.public.save(&public, self.text_tables.as_ref())?;
        Ok((full, public))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::random_mlp;

    /// Decoding arbitrary bytes (mutations and truncations of a real plan, and noise)
    /// returns an error or a plan, and never panics.
    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let plan = random_mlp("fuzz", &[6, 4, 3], 1).unwrap();
        let bases = [
            plan.to_bytes().unwrap(),
            plan.public.to_bytes(None).unwrap(),
        ];
        let mut state = 3u64;
        for round in 0..4000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut bytes = bases[round % 2].clone();
            let position = (state >> 33) as usize % bytes.len();
            bytes[position] = (state >> 13) as u8;
            if round % 3 == 0 {
                bytes.truncate((state >> 40) as usize % (bytes.len() + 1));
            }
            if round % 7 == 0 {
                bytes = (0..(state >> 52) as usize)
                    .map(|i| (state >> (i % 60)) as u8)
                    .collect();
            }
            let full = Plan::from_bytes(&bytes);
            let public = PublicPlan::from_bytes(&bytes);
            // A flipped byte is caught by the checksum unless it rewrote a byte to itself.
            if bytes != bases[round % 2] {
                assert!(
                    full.is_err() && public.is_err(),
                    "round {round}: a damaged plan was accepted"
                );
            }
        }
    }
}
