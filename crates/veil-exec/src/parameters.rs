//! Each role's form of a plan's parameters (DESIGN.md §3, "roles at load time"):
//! W and B at the server, the masks B at the dealer, everything in the clear for the
//! fixed-point simulation. The client's D = W + B arrives from the server once per
//! client session ([`veil_mpc::ServerParameters::masked_weights`]).

use veil_core::FixedPoint;
use veil_core::RingTensor;
use veil_core::prg::Seed;
use veil_model::plan::ParameterKind;
use veil_model::{Plan, PublicPlan};
use veil_mpc::{Cleartext, DealerParameters, ServerParameters};

use crate::Result;

/// Named encoded tensors.
type NamedTensors = Vec<(String, RingTensor)>;

/// (weights at scale f, biases at scale 2f) of a plan, encoded.
fn encoded_parameters(plan: &Plan) -> Result<(NamedTensors, NamedTensors)> {
    let codec: FixedPoint = plan.public.fixed_point()?;
    let bits = codec.fractional_bits();
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for info in &plan.public.parameters {
        let values = &plan.weights[&info.name];
        match info.kind {
            ParameterKind::Weight => {
                weights.push((
                    info.name.clone(),
                    RingTensor::new(info.shape.clone(), codec.encode_slice(values)?)?,
                ));
            }
            ParameterKind::Bias => {
                // Added to a product before its truncation, so at scale 2f.
                let encoded = values
                    .iter()
                    .map(|&v| codec.encode_scaled(f64::from(v), 2 * bits))
                    .collect::<veil_core::Result<Vec<u64>>>()?;
                biases.push((
                    info.name.clone(),
                    RingTensor::new(info.shape.clone(), encoded)?,
                ));
            }
        }
    }
    Ok((weights, biases))
}

/// The server's parameters for one mask epoch.
pub fn server_parameters(plan: &Plan, weight_seed: &Seed, epoch: u64) -> Result<ServerParameters> {
    let (weights, biases) = encoded_parameters(plan)?;
    Ok(ServerParameters::new(weight_seed, epoch, weights, biases))
}

/// The dealer's parameters (masks only) for one mask epoch, from the public plan.
pub fn dealer_parameters(plan: &PublicPlan, weight_seed: &Seed, epoch: u64) -> DealerParameters {
    let shapes: Vec<(String, Vec<usize>)> = plan
        .parameters
        .iter()
        .filter(|info| info.kind == ParameterKind::Weight)
        .map(|info| (info.name.clone(), info.shape.clone()))
        .collect();
    DealerParameters::new(weight_seed, epoch, &shapes)
}

/// The fixed-point simulation of a plan.
pub fn cleartext(plan: &Plan) -> Result<Cleartext> {
    let (weights, biases) = encoded_parameters(plan)?;
    Ok(Cleartext::new(plan.public.fixed_point()?, weights, biases))
}

/// The fixed-point simulation that refuses comparison operands outside their
/// calibrated bit-width: a run that would give wrong comparisons under MPC ends with
/// [`crate::Error::OutOfRange`] naming the node instead.
pub fn cleartext_checked(plan: &Plan) -> Result<Cleartext> {
    Ok(cleartext(plan)?.checking_ranges())
}
