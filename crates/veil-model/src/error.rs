//! The one error type of veil-model.

/// What can go wrong loading, compiling or running a model. Messages name files,
/// nodes, parameter names and shapes, never weight values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a veil plan.
    #[error("not a veil plan file (bad magic bytes); pass a file made by `veil compile`")]
    BadMagic,
    /// The plan was written by an incompatible version.
    #[error(
        "plan format version {found} is not supported (this build reads {supported}); recompile the plan"
    )]
    UnsupportedVersion {
        /// The file's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file ends early.
    #[error("the plan file is truncated ({what}); copy it again or recompile it")]
    Truncated {
        /// The part that is missing.
        what: &'static str,
    },
    /// The checksum does not match: the file was damaged.
    #[error("the plan file is corrupted (checksum mismatch); copy it again or recompile it")]
    ChecksumMismatch,
    /// A public plan was given where the full plan (with weights) is needed, or the
    /// other way round.
    #[error("expected a {expected} plan but the file is a {found} plan")]
    WrongPlanKind {
        /// What was needed.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// The plan's header does not parse.
    #[error("the plan header is invalid: {reason}")]
    InvalidHeader {
        /// The parser's message (the header is public).
        reason: String,
    },
    /// The architecture description does not parse or is inconsistent.
    #[error("invalid architecture: {reason}")]
    InvalidArchitecture {
        /// What is wrong.
        reason: String,
    },
    /// The graph is malformed.
    #[error("invalid graph at node {node}: {reason}")]
    InvalidGraph {
        /// The node index.
        node: usize,
        /// What is wrong.
        reason: String,
    },
    /// A parameter is missing from the weights.
    #[error("parameter {name:?} is missing from the weights file")]
    MissingParameter {
        /// The parameter name.
        name: String,
    },
    /// A parameter has the wrong shape or type.
    #[error("parameter {name:?}: expected shape {expected:?}, found {found:?}")]
    ParameterShape {
        /// The parameter name.
        name: String,
        /// The shape the graph needs.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// The safetensors file could not be read.
    #[error("safetensors: {reason}")]
    Safetensors {
        /// The reader's message.
        reason: String,
    },
    /// An input buffer has the wrong length.
    #[error(
        "input has {found} values, but the plan expects {expected} per sample ({}) times the batch",
        describe_inputs(shapes)
    )]
    InputShape {
        /// Values per sample the plan expects, over all its inputs.
        expected: usize,
        /// Values given.
        found: usize,
        /// Each input's name and per-sample shape, in the order of a flat buffer.
        shapes: Vec<(String, Vec<usize>)>,
    },
    /// An input value cannot be encoded as its kind requires.
    #[error("input {input:?}, value {position}: {reason}")]
    InputValue {
        /// The input's name.
        input: String,
        /// The value's position in that input's buffer.
        position: usize,
        /// What is wrong (never the value of a real-valued input).
        reason: String,
    },
    /// A tensor-level error.
    #[error(transparent)]
    Core(#[from] veil_core::Error),
}

/// veil-model's result type.
pub type Result<T> = std::result::Result<T, Error>;

fn describe_inputs(shapes: &[(String, Vec<usize>)]) -> String {
    let parts: Vec<String> = shapes
        .iter()
        .map(|(name, shape)| format!("{name} {shape:?}"))
        .collect();
    format!("inputs: {}", parts.join(", "))
}
