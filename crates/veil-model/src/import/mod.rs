//! Importers: model files in, a [`crate::Plan`] out.
//!
//! - [`architecture`]: veil's architecture description (a JSON list of layers) plus a
//!   safetensors file, as `veil compile --arch … --weights …` reads them;
//! - [`hugging_face`]: Hugging Face BERT-family directories (sentence-transformers
//!   pipelines too), as `veil compile --hf DIR` reads them;
//! - [`safetensors`]: the f32 tensor files every importer reads.
//!
//! Each importer builds the IR and hands it to [`crate::passes`]. A new format (ONNX)
//! gets a module of its own here.

pub mod architecture;
pub mod hugging_face;
pub mod safetensors;

pub use architecture::{Architecture, Layer, compile};
pub use hugging_face::{DEFAULT_MASK_PENALTY, HuggingFaceOptions, compile_hugging_face};
pub use safetensors::{ShapedValues, read_safetensors, read_safetensors_except, write_safetensors};
