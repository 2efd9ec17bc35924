//! The untrusted worker: convolves what the trusted runtime sends it, on every core.
//!
//! It holds a copy of the model's weights (public to it, as in AsymML and Slalom), the
//! residuals of the current training batch, and nothing else. It sees, per layer: the
//! residual `X − U·V` (split mode), `X + R mod 2^64` (blinded mode), or the whole input
//! (the untrusted-only baseline), and in training the output gradients.

use veil_core::FixedPoint;
use veil_core::kernels::{Conv2dShape, conv2d_u64};
use veil_net::Channel;

use crate::msgs::{Reply, Request};
use crate::network::{self, Architecture, Executor, LocalExecutor, Model, Sgd};
use crate::{Error, Result};

/// The most samples one request may carry (a bound on what a peer can make us allocate).
pub const MAX_BATCH: usize = 4096;
/// Fractional bits of the blinded mode's fixed-point encoding (veil-core's codec).
pub const FRACTIONAL_BITS: u32 = 16;

/// The worker's state between requests.
pub struct Worker {
    threads: usize,
    model: Option<Model>,
    fixed_weights: Vec<Vec<u64>>,
    executor: LocalExecutor,
    optimiser: Option<Sgd>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Worker")
            .field("threads", &self.threads)
            .field("model_loaded", &self.model.is_some())
            .finish_non_exhaustive()
    }
}

/// The reason a request cannot be served, sent back to the trusted side.
fn refuse(reason: impl Into<String>) -> Error {
    Error::WorkerFailed {
        reason: reason.into(),
    }
}

impl Worker {
    /// A worker computing on `threads` threads.
    pub fn new(threads: usize) -> Worker {
        Worker {
            threads,
            model: None,
            fixed_weights: Vec::new(),
            executor: LocalExecutor::new(threads),
            optimiser: None,
        }
    }

    /// Serves requests until [`Request::Shutdown`] or the channel closes. A request the
    /// worker cannot serve (wrong shapes) gets a failure reply; a malformed frame ends
    /// the session with an error.
    pub fn serve(&mut self, channel: &mut dyn Channel) -> Result<()> {
        loop {
            let frame = match channel.recv() {
                Ok(frame) => frame,
                Err(veil_net::Error::PeerClosed) => return Ok(()),
                Err(error) => return Err(error.into()),
            };
            let request = match Request::decode(&frame) {
                Ok(request) => request,
                Err(error) => {
                    channel.send(&Reply::Failure(error.to_string()).encode())?;
                    return Err(error);
                }
            };
            if request == Request::Shutdown {
                channel.send(&Reply::Done.encode())?;
                return Ok(());
            }
            let reply = match self.handle(request) {
                Ok(reply) => reply,
                Err(Error::WorkerFailed { reason }) => Reply::Failure(reason),
                Err(error) => Reply::Failure(error.to_string()),
            };
            channel.send(&reply.encode())?;
        }
    }

    fn model(&self) -> Result<&Model> {
        self.model
            .as_ref()
            .ok_or_else(|| refuse("no model has been loaded"))
    }

    fn geometry(&self, layer: u16, batch: u32) -> Result<(usize, usize)> {
        let model = self.model()?;
        let layer = usize::from(layer);
        if layer >= model.layers.len() {
            return Err(refuse(format!("there is no layer {layer}")));
        }
        let batch = batch as usize;
        if batch == 0 || batch > MAX_BATCH {
            return Err(refuse(format!(
                "a batch of {batch} samples (1..={MAX_BATCH})"
            )));
        }
        Ok((layer, batch))
    }

    /// Serves one request.
    pub fn handle(&mut self, request: Request) -> Result<Reply> {
        match request {
            Request::LoadModel {
                architecture,
                width,
                parameters,
            } => self.load(architecture, usize::from(width), parameters),
            Request::ConvForward {
                layer,
                batch,
                keep,
                residual,
            } => {
                let (layer, batch) = self.geometry(layer, batch)?;
                let model = self.model.as_ref().ok_or_else(|| refuse("no model"))?;
                let length = batch * model.layers[layer].geometry.input_len();
                if residual.is_empty() {
                    // A zero residual: a zero output, sent as nothing. In training the
                    // zeros are kept for the backward (whose input gradient needs only W).
                    if keep {
                        self.executor.conv_forward(
                            model,
                            layer,
                            &vec![0f32; length],
                            batch,
                            true,
                        )?;
                    }
                    return Ok(Reply::Reals(vec![Vec::new()]));
                }
                if residual.len() != length {
                    return Err(refuse(format!(
                        "layer {layer}: {} residual values, expected {length}",
                        residual.len()
                    )));
                }
                let output = self
                    .executor
                    .conv_forward(model, layer, &residual, batch, keep)?;
                Ok(Reply::Reals(vec![output]))
            }
            Request::ConvBackward {
                layer,
                batch,
                need_input,
                grad_output,
            } => {
                let (layer, batch) = self.geometry(layer, batch)?;
                let model = self.model.as_ref().ok_or_else(|| refuse("no model"))?;
                let (weight, input) =
                    self.executor
                        .conv_backward(model, layer, &grad_output, batch, need_input)?;
                Ok(Reply::Reals(vec![weight, input.unwrap_or_default()]))
            }
            Request::BlindedForward {
                layer,
                batch,
                blinded,
            } => {
                let (layer, batch) = self.geometry(layer, batch)?;
                let geometry = self.model()?.layers[layer].geometry;
                if blinded.len() != batch * geometry.input_len() {
                    return Err(refuse(format!(
                        "layer {layer}: {} blinded values, expected {}",
                        blinded.len(),
                        batch * geometry.input_len()
                    )));
                }
                let weight = &self.fixed_weights[layer];
                let mut output = vec![0u64; batch * geometry.output_len()];
                let shape = ring_shape(&geometry);
                let input_len = geometry.input_len();
                network::parallel_samples(
                    self.threads,
                    &mut output,
                    geometry.output_len(),
                    |sample, out| {
                        let x = &blinded[sample * input_len..(sample + 1) * input_len];
                        // The shapes were checked above; the kernel re-checks them.
                        conv2d_u64(&shape, x, weight, out).map_or(0, |()| geometry.macs())
                    },
                );
                Ok(Reply::Ring(output))
            }
            Request::WholeForward { batch, images } => {
                let (_, batch) = self.geometry(0, batch)?;
                let model = self.model.as_ref().ok_or_else(|| refuse("no model"))?;
                let (logits, _) =
                    network::forward(model, &mut self.executor, &images, batch, false)?;
                Ok(Reply::Reals(vec![logits]))
            }
            Request::WholeTrainStep {
                batch,
                images,
                labels,
                learning_rate,
            } => {
                let (_, batch) = self.geometry(0, batch)?;
                if labels.len() != batch
                    || labels
                        .iter()
                        .any(|&label| usize::from(label) >= network::CLASSES)
                {
                    return Err(refuse("the labels do not match the batch"));
                }
                let model = self.model.as_mut().ok_or_else(|| refuse("no model"))?;
                let (logits, trace) =
                    network::forward(model, &mut self.executor, &images, batch, true)?;
                let (loss, grad) = network::cross_entropy(&logits, &labels);
                let gradients = network::backward(model, &mut self.executor, &trace, grad, batch)?;
                let optimiser = self.optimiser.get_or_insert_with(|| {
                    Sgd::new(model, learning_rate, crate::trusted::MOMENTUM)
                });
                optimiser.learning_rate = learning_rate;
                optimiser.step(model, &gradients);
                Ok(Reply::Reals(vec![vec![loss]]))
            }
            Request::Shutdown => Ok(Reply::Done),
        }
    }

    fn load(
        &mut self,
        architecture: Architecture,
        width: usize,
        parameters: Vec<(Vec<f32>, Vec<f32>)>,
    ) -> Result<Reply> {
        let mut model = match self.model.take() {
            Some(model) if model.architecture == architecture && model.width == width => model,
            _ => {
                self.optimiser = None;
                Model::with_width(architecture, width, 0)
            }
        };
        if parameters.len() != model.layers.len() {
            return Err(refuse(format!(
                "{} layers of parameters for a model of {}",
                parameters.len(),
                model.layers.len()
            )));
        }
        for (layer, (weight, bias)) in model.layers.iter().zip(&parameters) {
            if weight.len() != layer.weight.len() || bias.len() != layer.bias.len() {
                return Err(refuse(format!(
                    "{}: the parameters have the wrong shape",
                    layer.name
                )));
            }
        }
        let codec = FixedPoint::new(FRACTIONAL_BITS)?;
        self.fixed_weights = parameters
            .iter()
            .map(|(weight, _)| codec.encode_slice(weight))
            .collect::<veil_core::Result<_>>()?;
        for (layer, (weight, bias)) in model.layers.iter_mut().zip(parameters) {
            layer.weight = weight;
            layer.bias = bias;
        }
        self.model = Some(model);
        Ok(Reply::Done)
    }
}

/// veil-core's ring convolution shape for one sample of `geometry`.
pub fn ring_shape(geometry: &crate::kernels::ConvGeometry) -> Conv2dShape {
    Conv2dShape {
        batch: 1,
        in_channels: geometry.channels,
        height: geometry.height,
        width: geometry.width,
        out_channels: geometry.out_channels,
        kernel_height: geometry.kernel,
        kernel_width: geometry.kernel,
        stride: 1,
        padding: geometry.padding,
    }
}
