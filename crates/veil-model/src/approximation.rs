//! Approximation policies (DESIGN.md §5): which form each activation node takes under
//! every executor — ReLU `exact | quad`, GELU `exact | quad | relu`, Softmax `exact |
//! 2quad | 2relu` — and the ops each form compiles to.
//!
//! A policy is written `relu=quad,gelu=quad,softmax=2quad` (any subset, in any order), or
//! `exact`. It is resolved per node: a kind the policy names takes the policy's form; a
//! kind it leaves out keeps the form the model file gives the layer (an architecture's
//! `"approx"`, which is how `veil distill` marks its students), else `exact`.
//!
//! The forms, as ops of the IR (the plain, fixed-point and secure executors each run
//! these same ops, so they cannot disagree on what a form means):
//! - ReLU `quad`: [`Op::Quadratic`] a·x² + b·x + c, by default Faster CryptoNets'
//!   0.125x² + 0.5x + 0.25 (cookbook §5.1), or the coefficients a student learned;
//! - GELU `quad`: MPCFormer's 0.125x² + 0.25x + 0.5; GELU `relu`: [`Op::Relu`];
//! - Softmax `2quad`: [`Op::QuadSoftmax`] with c = 5, masked by the attention mask where
//!   the model has one; `2relu`: [`Op::ReluSoftmax`] with ε = [`TWO_RELU_EPSILON`].

use crate::ir::Op;
use crate::{Error, Result};

/// Faster CryptoNets' ReLU replacement 0.125x² + 0.5x + 0.25 (a, b, c).
pub const RELU_QUAD: [f64; 3] = [0.125, 0.5, 0.25];
/// MPCFormer's GELU replacement 0.125x² + 0.25x + 0.5 (a, b, c).
pub const GELU_QUAD: [f64; 3] = [0.125, 0.25, 0.5];
/// MPCFormer's 2Quad shift c in (x + c)².
pub const TWO_QUAD_SHIFT: f64 = 5.0;
/// The ε of the 2ReLU softmax (ReLU(x) + ε/n) / (Σ ReLU(x) + ε).
pub const TWO_RELU_EPSILON: f64 = 1e-2;

/// A ReLU's form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReluForm {
    /// max(x, 0), one comparison.
    Exact,
    /// a·x² + b·x + c with these (a, b, c).
    Quad([f64; 3]),
}

/// A GELU's form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluForm {
    /// GELU; under MPC, ReLU minus a 256-entry table (SIGMA's): within 0.008.
    Exact,
    /// GELU; under MPC, PUMA's piecewise polynomial: within 0.020, three times the bytes.
    Polynomial,
    /// 0.125x² + 0.25x + 0.5.
    Quad,
    /// ReLU.
    Relu,
}

/// A softmax's form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxForm {
    /// The exponential softmax (max, limit-form exp, reciprocal under MPC).
    Exact,
    /// (x + 5)² over its row sum.
    TwoQuad,
    /// (ReLU(x) + ε/n) over (Σ ReLU(x) + ε).
    TwoRelu,
}

/// A policy: the form of each activation kind it names.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Policy {
    /// ReLUs' form, if the policy sets it.
    pub relu: Option<ReluForm>,
    /// GELUs' form, if set.
    pub gelu: Option<GeluForm>,
    /// Softmaxes' form, if set.
    pub softmax: Option<SoftmaxForm>,
}

/// What the policy syntax accepts, for error messages.
const SYNTAX: &str = "`exact`, or kind=form pairs joined by commas: relu=exact|quad, gelu=exact|quad|relu, softmax=exact|2quad|2relu";

impl Policy {
    /// Parses `exact` (nothing set) or `relu=quad,gelu=relu,softmax=2quad`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut policy = Policy::default();
        let text = text.trim();
        if text.is_empty() || text == "exact" {
            return Ok(policy);
        }
        for pair in text.split(',') {
            let (kind, form) = pair.split_once('=').ok_or_else(|| invalid(pair))?;
            let (kind, form) = (kind.trim(), form.trim());
            match kind {
                "relu" => set(&mut policy.relu, parse_relu(form)?, kind)?,
                "gelu" => set(&mut policy.gelu, parse_gelu(form)?, kind)?,
                "softmax" => set(&mut policy.softmax, parse_softmax(form)?, kind)?,
                _ => return Err(invalid(pair)),
            }
        }
        Ok(policy)
    }

    /// This policy, with the forms it leaves out taken from `fallback` (a flag's policy
    /// over the forms a model file states).
    pub fn or(self, fallback: Policy) -> Policy {
        Policy {
            relu: self.relu.or(fallback.relu),
            gelu: self.gelu.or(fallback.gelu),
            softmax: self.softmax.or(fallback.softmax),
        }
    }

    /// The policy as [`Policy::parse`] reads it back (`exact` when it sets nothing);
    /// learned quadratic coefficients are shown as `quad`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(form) = self.relu {
            parts.push(format!("relu={}", relu_name(form)));
        }
        if let Some(form) = self.gelu {
            parts.push(format!("gelu={}", gelu_name(form)));
        }
        if let Some(form) = self.softmax {
            parts.push(format!("softmax={}", softmax_name(form)));
        }
        if parts.is_empty() {
            "exact".into()
        } else {
            parts.join(",")
        }
    }
}

fn set<T>(slot: &mut Option<T>, value: T, kind: &str) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(Error::InvalidArchitecture {
            reason: format!("the approximation policy sets {kind} twice"),
        });
    }
    Ok(())
}

fn invalid(text: &str) -> Error {
    Error::InvalidArchitecture {
        reason: format!("approximation policy {text:?} is not {SYNTAX}"),
    }
}

/// A ReLU form by name (`quad` with the default coefficients).
pub fn parse_relu(form: &str) -> Result<ReluForm> {
    match form {
        "exact" => Ok(ReluForm::Exact),
        "quad" => Ok(ReluForm::Quad(RELU_QUAD)),
        _ => Err(invalid(&format!("relu={form}"))),
    }
}

/// A GELU form by name.
pub fn parse_gelu(form: &str) -> Result<GeluForm> {
    match form {
        "exact" => Ok(GeluForm::Exact),
        "polynomial" => Ok(GeluForm::Polynomial),
        "quad" => Ok(GeluForm::Quad),
        "relu" => Ok(GeluForm::Relu),
        _ => Err(invalid(&format!("gelu={form}"))),
    }
}

/// A softmax form by name.
pub fn parse_softmax(form: &str) -> Result<SoftmaxForm> {
    match form {
        "exact" => Ok(SoftmaxForm::Exact),
        "2quad" => Ok(SoftmaxForm::TwoQuad),
        "2relu" => Ok(SoftmaxForm::TwoRelu),
        _ => Err(invalid(&format!("softmax={form}"))),
    }
}

fn relu_name(form: ReluForm) -> &'static str {
    match form {
        ReluForm::Exact => "exact",
        ReluForm::Quad(_) => "quad",
    }
}

/// A GELU form's name.
pub fn gelu_name(form: GeluForm) -> &'static str {
    match form {
        GeluForm::Exact => "exact",
        GeluForm::Polynomial => "polynomial",
        GeluForm::Quad => "quad",
        GeluForm::Relu => "relu",
    }
}

/// A softmax form's name, as [`parse_softmax`] reads it.
pub fn softmax_name(form: SoftmaxForm) -> &'static str {
    match form {
        SoftmaxForm::Exact => "exact",
        SoftmaxForm::TwoQuad => "2quad",
        SoftmaxForm::TwoRelu => "2relu",
    }
}

/// The op a ReLU node compiles to.
pub fn relu_op(form: ReluForm, bits: u32) -> Op {
    match form {
        ReluForm::Exact => Op::Relu { bits },
        ReluForm::Quad([a, b, c]) => Op::Quadratic { a, b, c },
    }
}

/// The op a GELU node compiles to.
pub fn gelu_op(form: GeluForm, bits: u32) -> Op {
    match form {
        GeluForm::Exact => Op::GeluTable { bits },
        GeluForm::Polynomial => Op::Gelu { bits },
        GeluForm::Quad => {
            let [a, b, c] = GELU_QUAD;
            Op::Quadratic { a, b, c }
        }
        GeluForm::Relu => Op::Relu { bits },
    }
}

/// The op a softmax node compiles to; `masked` says whether a 2Quad form reads the
/// attention mask as a second input (the exact and 2ReLU forms read masked scores).
pub fn softmax_op(form: SoftmaxForm, bits: u32, masked: bool) -> Op {
    match form {
        SoftmaxForm::Exact => Op::Softmax { bits },
        SoftmaxForm::TwoQuad => Op::QuadSoftmax {
            shift: TWO_QUAD_SHIFT,
            masked,
            bits,
        },
        SoftmaxForm::TwoRelu => Op::ReluSoftmax {
            epsilon: TWO_RELU_EPSILON,
            bits,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_read_back() {
        for text in [
            "exact",
            "relu=quad",
            "gelu=relu,softmax=2quad",
            "relu=exact,gelu=quad,softmax=2relu",
        ] {
            assert_eq!(Policy::parse(text).unwrap().describe(), text);
        }
        let policy = Policy::parse(" softmax = 2relu , relu=quad ").unwrap();
        assert_eq!(policy.relu, Some(ReluForm::Quad(RELU_QUAD)));
        assert_eq!(policy.softmax, Some(SoftmaxForm::TwoRelu));
        assert_eq!(policy.gelu, None);
    }

    #[test]
    fn bad_policies_say_what_is_accepted() {
        for text in [
            "quad",
            "relu=2quad",
            "tanh=quad",
            "relu=quad,relu=exact",
            "softmax",
        ] {
            let message = Policy::parse(text).unwrap_err().to_string();
            assert!(
                message.contains("relu") || message.contains("twice"),
                "{text}: {message}"
            );
        }
    }
}
