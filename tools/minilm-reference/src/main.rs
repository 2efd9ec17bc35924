//! Independent reference embeddings for sentence-transformers/all-MiniLM-L6-v2,
//! computed with candle-transformers' BertModel (CPU), mean pooling over the
//! attention mask and L2 normalisation.
//!
//! Usage: minilm-reference MODEL_DIR OUT.json (SENTENCES... | --input FILE)
//!
//! Runs in F32: candle-nn 0.11.1's fused CPU LayerNorm op rejects F64
//! ("unsupported dtype for rmsnorm F64"), so BertModel cannot run in F64.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct};
use serde_json::json;
use std::path::PathBuf;
use tokenizers::Tokenizer;

const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
const CANDLE_VERSION: &str = "0.11.1";
const DTYPE: DType = DType::F32;

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut sentences = Vec::new();
    if let Some(i) = args.iter().position(|a| a == "--input") {
        let file = args.get(i + 1).context("--input needs a FILE")?.clone();
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
        sentences.extend(text.lines().map(str::to_owned));
        args.drain(i..i + 2);
    }
    if args.len() < 2 {
        bail!("usage: minilm-reference MODEL_DIR OUT.json (SENTENCES... | --input FILE)");
    }
    let model_dir = PathBuf::from(&args[0]);
    let out_path = PathBuf::from(&args[1]);
    sentences.extend(args[2..].iter().cloned());

    let tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
        .map_err(anyhow::Error::msg)
        .context("loading tokenizer.json")?;
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json"))?)?;
    // candle deserialises "gelu" to HiddenAct::Gelu, i.e. Tensor::gelu_erf (exact erf GELU).
    if !matches!(config.hidden_act, HiddenAct::Gelu) {
        bail!("expected hidden_act \"gelu\" (HiddenAct::Gelu, erf GELU)");
    }
    let device = Device::Cpu;
    let weights = model_dir.join("model.safetensors");
    // Safety: the file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DTYPE, &device)? };
    let model = BertModel::load(vb, &config)?;

    let mut records = Vec::new();
    for text in &sentences {
        let enc = tokenizer
            .encode(text.as_str(), true)
            .map_err(anyhow::Error::msg)?;
        let ids = enc.get_ids();
        let mask = enc.get_attention_mask();
        let input_ids = Tensor::new(ids, &device)?.unsqueeze(0)?;
        let token_type_ids = input_ids.zeros_like()?;
        let mask_t = Tensor::new(mask, &device)?.unsqueeze(0)?;
        let hidden = model.forward(&input_ids, &token_type_ids, Some(&mask_t))?; // (1, n, 384)
        let m = mask_t.to_dtype(DTYPE)?.unsqueeze(2)?; // (1, n, 1)
        let summed = hidden.broadcast_mul(&m)?.sum(1)?; // (1, 384)
        let mean = summed.broadcast_div(&m.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let emb = mean.broadcast_div(&norm)?.squeeze(0)?;
        let embedding: Vec<f32> = emb.to_vec1()?; // serialised as shortest round-trip f32
        records.push(json!({
            "text": text,
            "token_ids": ids,
            "attention_mask": mask,
            "embedding": embedding,
        }));
    }

    let out = json!({
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_safetensors_sha256": MODEL_SHA256,
        "reference": format!(
            "candle-transformers {CANDLE_VERSION} BertModel, dtype F32, mean pooling over the attention mask, L2 normalisation"
        ),
        "sentences": records,
    });
    std::fs::write(&out_path, serde_json::to_string_pretty(&out)? + "\n")?;
    eprintln!(
        "wrote {} embeddings to {}",
        sentences.len(),
        out_path.display()
    );
    Ok(())
}
