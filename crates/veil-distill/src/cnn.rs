//! The CNN zoo (Thrust 2): a plain CNN and the same CNN with residual connections, each
//! with ReLU or `quad` activations, on 28×28 single-channel images.
//!
//! ```text
//! conv1 1→w → bn1 → act1 → avg_pool 2        (28 → 14)
//! block1: conv w→w → bn → act → conv w→w → bn [+ skip] → act
//! conv2 w→2w → bn2 → act2 → avg_pool 2       (14 → 7)
//! block2: conv 2w→2w → bn → act → conv 2w→2w → bn [+ skip] → act
//! flatten → fc 2w·49 → 10
//! ```
//!
//! The plain and residual forms have the same layers; only the two skips differ. Pooling
//! is average pooling in every form (a max pool costs comparisons under MPC; the teacher
//! uses the same, so that teacher and student differ only in their activations). A
//! `quad` activation is a·x² + b·x + c with a = 1/8 fixed (a power of two: two rounds
//! under MPC, veil-exec's vertex form) and b, c learned per layer, initialised at
//! Faster CryptoNets' 0.5 and 0.25; batch normalisation in front of every activation
//! keeps the quadratics' inputs near N(0, 1) (cookbook §5.1).

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Conv2d, Linear, VarBuilder, VarMap};
use serde_json::{Value, json};
use veil_core::sampling::SplitMix64;

use crate::Result;

/// Image side, classes.
pub const SIDE: usize = 28;
/// Output classes.
pub const CLASSES: usize = 10;
/// The fixed coefficient of x² of a `quad` activation.
pub const QUAD_SQUARE: f64 = 0.125;

/// An activation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// max(x, 0).
    Relu,
    /// a·x² + b·x + c, a = [`QUAD_SQUARE`], b and c learned.
    Quad,
}

/// Which member of the zoo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Whether the two blocks add their input back.
    pub residual: bool,
    /// Channels of the first stage.
    pub width: usize,
    /// The activations' kind.
    pub activation: Activation,
}

impl Shape {
    /// `cnn-plain-relu`, `cnn-residual-quad`, …
    pub fn name(&self) -> String {
        format!(
            "cnn-{}-{}",
            if self.residual { "residual" } else { "plain" },
            match self.activation {
                Activation::Relu => "relu",
                Activation::Quad => "quad",
            }
        )
    }
}

/// One activation: its name and, for `quad`, its learned b and c.
struct Act {
    name: String,
    linear_and_constant: Option<(Tensor, Tensor)>,
}

impl Act {
    fn new(name: &str, activation: Activation, builder: &VarBuilder) -> Result<Self> {
        let linear_and_constant = match activation {
            Activation::Relu => None,
            Activation::Quad => {
                let builder = builder.pp(name);
                let b = builder.get_with_hints(1, "b", candle_nn::Init::Const(0.5))?;
                let c = builder.get_with_hints(1, "c", candle_nn::Init::Const(0.25))?;
                Some((b, c))
            }
        };
        Ok(Self {
            name: name.into(),
            linear_and_constant,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.linear_and_constant {
            None => x.relu()?,
            Some((b, c)) => {
                let square = (x.sqr()? * QUAD_SQUARE)?;
                square
                    .broadcast_add(&x.broadcast_mul(b)?)?
                    .broadcast_add(c)?
            }
        })
    }

    /// The architecture layer: a ReLU, or a `quad` ReLU with its coefficients.
    fn layer(&self) -> Result<Value> {
        Ok(match &self.linear_and_constant {
            None => json!({"op": "relu", "name": self.name}),
            Some((b, c)) => {
                let b = f64::from(b.to_vec1::<f32>()?[0]);
                let c = f64::from(c.to_vec1::<f32>()?[0]);
                json!({"op": "relu", "name": self.name, "approx": "quad", "coefficients": [QUAD_SQUARE, b, c]})
            }
        })
    }
}

/// Convolution, batch normalisation, activation.
struct Unit {
    name: String,
    convolution: Conv2d,
    norm: BatchNorm,
    act: Option<Act>,
}

impl Unit {
    fn new(
        name: &str,
        (inputs, outputs): (usize, usize),
        activation: Option<Activation>,
        builder: &VarBuilder,
    ) -> Result<Self> {
        let config = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let convolution = candle_nn::conv2d(inputs, outputs, 3, config, builder.pp(name))?;
        let norm = candle_nn::batch_norm(outputs, 1e-5, builder.pp(format!("{name}.bn")))?;
        let act = activation
            .map(|kind| Act::new(&format!("{name}.act"), kind, builder))
            .transpose()?;
        Ok(Self {
            name: name.into(),
            convolution,
            norm,
            act,
        })
    }

    /// Convolution and normalisation, before the activation.
    fn normalised(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.convolution.forward(x)?;
        Ok(self.norm.forward_t(&y, train)?)
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.normalised(x, train)?;
        match &self.act {
            Some(act) => act.forward(&y),
            None => Ok(y),
        }
    }

    fn layers(&self, layers: &mut Vec<Value>) -> Result<()> {
        let name = &self.name;
        layers.push(json!({"op": "conv2d", "name": format!("{name}.conv"), "weight": format!("{name}.weight"), "bias": format!("{name}.bias"), "padding": 1}));
        layers.push(json!({"op": "batch_norm", "weight": format!("{name}.bn.weight"), "bias": format!("{name}.bn.bias"), "running_mean": format!("{name}.bn.running_mean"), "running_var": format!("{name}.bn.running_var")}));
        if let Some(act) = &self.act {
            layers.push(act.layer()?);
        }
        Ok(())
    }
}

/// Two units, the second without its activation, then the skip (when residual) and the
/// activation.
struct Block {
    first: Unit,
    second: Unit,
    act: Act,
    residual: bool,
}

impl Block {
    fn new(name: &str, channels: usize, shape: Shape, builder: &VarBuilder) -> Result<Self> {
        Ok(Self {
            first: Unit::new(
                &format!("{name}.first"),
                (channels, channels),
                Some(shape.activation),
                builder,
            )?,
            second: Unit::new(
                &format!("{name}.second"),
                (channels, channels),
                None,
                builder,
            )?,
            act: Act::new(&format!("{name}.act"), shape.activation, builder)?,
            residual: shape.residual,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self
            .second
            .normalised(&self.first.forward(x, train)?, train)?;
        let y = if self.residual { (y + x)? } else { y };
        self.act.forward(&y)
    }

    /// `skip` is the name of the layer whose output the block adds back.
    fn layers(&self, layers: &mut Vec<Value>, skip: &str) -> Result<()> {
        self.first.layers(layers)?;
        self.second.layers(layers)?;
        if self.residual {
            layers.push(json!({"op": "add", "with": skip}));
        }
        layers.push(self.act.layer()?);
        Ok(())
    }
}

/// A member of the zoo with its variables.
pub struct Cnn {
    /// Its shape.
    pub shape: Shape,
    /// Every variable, by name (weights, batch-norm statistics, quad coefficients).
    pub variables: VarMap,
    stem: Unit,
    first_block: Block,
    widen: Unit,
    second_block: Block,
    classifier: Linear,
}

/// Draws every convolution and linear weight and bias again from `seed`, in name order.
fn redraw(variables: &VarMap, device: &Device, seed: u64) -> Result<()> {
    let data = variables
        .data()
        .lock()
        .map_err(|_| crate::Error::Invalid("the model's variables are poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut sampler = SplitMix64::new(seed);
    let fan_in = |dims: &[usize]| dims[1..].iter().product::<usize>().max(1) as f64;
    for name in names {
        let variable = &data[name];
        let dims = variable.dims().to_vec();
        let count = dims.iter().product();
        let values = if dims.len() >= 2 && name.ends_with(".weight") {
            sampler.normal_vec(count, (2.0 / fan_in(&dims)).sqrt() as f32)
        } else if let Some(weight) = name
            .strip_suffix(".bias")
            .and_then(|stem| data.get(&format!("{stem}.weight")))
            .filter(|weight| weight.dims().len() >= 2)
        {
            let bound = 1.0 / fan_in(weight.dims()).sqrt();
            (0..count)
                .map(|_| ((sampler.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect()
        } else {
            continue;
        };
        variable.set(&Tensor::from_vec(values, dims, device)?)?;
    }
    Ok(())
}

impl Cnn {
    /// A freshly initialised model, drawn from `seed`: convolution and linear weights
    /// from N(0, 2/fan_in) and their biases from U(±1/√fan_in) (candle's default
    /// families, which draw from an unseeded generator), batch normalisation at 1 and 0,
    /// the quad coefficients at their defaults.
    pub fn new(shape: Shape, device: &Device, seed: u64) -> Result<Self> {
        let variables = VarMap::new();
        let builder = VarBuilder::from_varmap(&variables, DType::F32, device);
        let width = shape.width;
        let stem = Unit::new("stem", (1, width), Some(shape.activation), &builder)?;
        let first_block = Block::new("block1", width, shape, &builder)?;
        let widen = Unit::new(
            "widen",
            (width, 2 * width),
            Some(shape.activation),
            &builder,
        )?;
        let second_block = Block::new("block2", 2 * width, shape, &builder)?;
        let features = 2 * width * (SIDE / 4) * (SIDE / 4);
        let classifier = candle_nn::linear(features, CLASSES, builder.pp("fc"))?;
        redraw(&variables, device, seed)?;
        Ok(Self {
            shape,
            variables,
            stem,
            first_block,
            widen,
            second_block,
            classifier,
        })
    }

    /// A student of `shape` initialised from `teacher`: every variable the teacher has
    /// (the same names) takes the teacher's values; the quad coefficients start at their
    /// defaults.
    pub fn initialised_from(shape: Shape, teacher: &Cnn, device: &Device) -> Result<Self> {
        let mut student = Self::new(shape, device, 0)?;
        let teacher_variables = teacher
            .variables
            .data()
            .lock()
            .map_err(|_| crate::Error::Invalid("the teacher's variables are poisoned".into()))?
            .iter()
            .map(|(name, variable)| (name.clone(), variable.as_tensor().clone()))
            .collect::<Vec<_>>();
        for (name, value) in teacher_variables {
            student.variables.set_one(name, value.copy()?)?;
        }
        Ok(student)
    }

    /// Sets every variable from a safetensors file [`crate::export`] wrote for this
    /// shape (a missing tensor or a wrong shape is an error).
    pub fn load(&self, path: &std::path::Path) -> Result<()> {
        // The map shares its variables with the layers: setting them sets the model.
        let mut variables = self.variables.clone();
        Ok(variables.load(path)?)
    }

    /// Logits `[batch, 10]` of images `[batch, 1, 28, 28]`; `train` normalises by the
    /// batch's statistics (and updates the running ones).
    pub fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.stem.forward(images, train)?.avg_pool2d(2)?;
        let x = self.first_block.forward(&x, train)?;
        let x = self.widen.forward(&x, train)?.avg_pool2d(2)?;
        let x = self.second_block.forward(&x, train)?;
        Ok(self.classifier.forward(&x.flatten_from(1)?)?)
    }

    /// The variables an optimiser updates (not the running statistics).
    pub fn trainable(&self) -> Result<Vec<candle_core::Var>> {
        let data = self
            .variables
            .data()
            .lock()
            .map_err(|_| crate::Error::Invalid("the variables are poisoned".into()))?;
        let mut named: Vec<_> = data
            .iter()
            .filter(|(name, _)| !name.contains("running_"))
            .map(|(name, variable)| (name.clone(), variable.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(named.into_iter().map(|(_, variable)| variable).collect())
    }

    /// The architecture description `veil compile --arch` reads (its plan named
    /// `name`), with the names of the tensors [`Cnn::variables`] saves.
    pub fn architecture(&self, name: &str) -> Result<Value> {
        let mut layers = Vec::new();
        self.stem.layers(&mut layers)?;
        layers.push(json!({"op": "avg_pool2d", "name": "pool1", "kernel": 2}));
        self.first_block.layers(&mut layers, "pool1")?;
        self.widen.layers(&mut layers)?;
        layers.push(json!({"op": "avg_pool2d", "name": "pool2", "kernel": 2}));
        self.second_block.layers(&mut layers, "pool2")?;
        layers.push(json!({"op": "flatten"}));
        layers.push(json!({"op": "linear", "weight": "fc.weight", "bias": "fc.bias"}));
        Ok(json!({
            "name": name,
            "input": [1, SIDE, SIDE],
            "layers": layers,
        }))
    }
}

/// The shape and the variable count only: weights never reach a `Debug` print.
impl std::fmt::Debug for Cnn {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.variables.all_vars().len();
        formatter
            .debug_struct("Cnn")
            .field("shape", &self.shape)
            .field("variables", &count)
            .finish_non_exhaustive()
    }
}
