//! Importers: model files in, a [`crate::Plan`] out.
//!
//! - [`architecture`]: veil's architecture description (a JSON list of layers) plus a
//!   safetensors file, as `veil compile --arch … --weights …` reads them;
//! - [`safetensors`]: the f32 tensor files every importer reads.
//!
//! Each importer builds the IR and hands it to [`crate::passes`]. A new format (Hugging
//! Face BERT directories, ONNX) gets a module of its own here.

pub mod architecture;
pub mod safetensors;

pub use architecture::{APPROXIMATIONS, Architecture, Layer, compile};
pub use safetensors::{ShapedValues, read_safetensors, write_safetensors};
