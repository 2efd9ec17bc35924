//! The `cleartext` protocol: the fixed-point simulation (SPU's REF2K). Plain ring
//! arithmetic with the secure protocols' semantics: truncation is the floor (the secure
//! truncation returns the floor or one ulp above it), comparisons decide the sign on the
//! same k-bit reduction. Simulation and secure runs share the executor, so they cannot
//! drift. [`Cleartext::checking_ranges`] makes it refuse, instead of reducing, a
//! comparison operand outside its k-bit range (where the secure run would decide the
//! sign of a wrapped value), and any value an op declares out of its documented range
//! ([`Protocol::check_range`]): the executor then names the node.

use std::collections::HashMap;
use std::sync::Arc;

use veil_core::{FixedPoint, RingTensor};

use crate::gates::signed_reduction;
use crate::protocol::{
    batched_matmul, check_bits, check_shift, check_table, matmul_dimensions, row_scaled, same_shape,
};
use crate::{Error, Protocol, Result};

/// The fixed-point simulation: every value in the clear.
pub struct Cleartext {
    fixed_point: FixedPoint,
    weights: HashMap<String, Arc<RingTensor>>,
    biases: HashMap<String, Arc<RingTensor>>,
    /// Refuse comparison operands outside their k-bit range.
    check_ranges: bool,
}

impl Cleartext {
    /// The same simulation, refusing every comparison operand outside the ±2^(k−1)
    /// range of its k-bit comparison ([`Error::OutOfRange`]).
    pub fn checking_ranges(mut self) -> Self {
        self.check_ranges = true;
        self
    }

    /// With range checks on, refuses a value outside the `bits`-bit signed range.
    fn check_comparison_range(
        &self,
        op: &'static str,
        value: &RingTensor,
        bits: u32,
    ) -> Result<()> {
        if !self.check_ranges || bits >= 64 {
            return Ok(());
        }
        let fits = |x: u64| signed_reduction(x, bits) == x as i64;
        if value.data().iter().all(|&x| fits(x)) {
            return Ok(());
        }
        Err(Error::OutOfRange {
            op,
            detail: format!(
                "a comparison operand exceeds the ±2^{} range of its {bits}-bit comparison; recalibrate on inputs like these, or compile with wider comparisons",
                bits - 1
            ),
        })
    }

    /// A simulation over encoded weights and biases (biases at twice the scale).
    pub fn new(
        fixed_point: FixedPoint,
        weights: Vec<(String, RingTensor)>,
        biases: Vec<(String, RingTensor)>,
    ) -> Self {
        Self {
            fixed_point,
            weights: weights.into_iter().map(|(n, w)| (n, Arc::new(w))).collect(),
            biases: biases.into_iter().map(|(n, b)| (n, Arc::new(b))).collect(),
            check_ranges: false,
        }
    }
}

impl Protocol for Cleartext {
    type Shared = RingTensor;
    type Weight = Arc<RingTensor>;
    type Bias = Arc<RingTensor>;

    fn fixed_point(&self) -> FixedPoint {
        self.fixed_point
    }

    fn input(&mut self, shape: &[usize], value: Option<&RingTensor>) -> Result<RingTensor> {
        let value = value.ok_or_else(|| Error::ApiMisuse {
            op: "input",
            detail: "the simulation needs the input".into(),
        })?;
        same_shape("input", shape, value.shape())?;
        Ok(value.clone())
    }

    fn public(&mut self, value: &RingTensor) -> Result<RingTensor> {
        Ok(value.clone())
    }

    fn weight(&mut self, name: &str) -> Result<Arc<RingTensor>> {
        self.weights
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingParameter { name: name.into() })
    }

    fn bias(&mut self, name: &str) -> Result<Arc<RingTensor>> {
        self.biases
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingParameter { name: name.into() })
    }

    fn shape_of(&self, value: &RingTensor) -> Vec<usize> {
        value.shape().to_vec()
    }

    fn reshape(&mut self, value: RingTensor, shape: &[usize]) -> Result<RingTensor> {
        Ok(value.reshape(shape)?)
    }

    fn add(&mut self, left: &RingTensor, right: &RingTensor) -> Result<RingTensor> {
        Ok(left.add(right)?)
    }

    fn sub(&mut self, left: &RingTensor, right: &RingTensor) -> Result<RingTensor> {
        Ok(left.sub(right)?)
    }

    fn scale(&mut self, value: &RingTensor, factor: u64) -> Result<RingTensor> {
        Ok(value.map(|x| x.wrapping_mul(factor)))
    }

    fn gather(
        &mut self,
        value: &RingTensor,
        indices: &[usize],
        shape: &[usize],
    ) -> Result<RingTensor> {
        Ok(value.gather(indices, shape)?)
    }

    fn concat(&mut self, parts: &[&RingTensor]) -> Result<RingTensor> {
        Ok(RingTensor::concat(parts))
    }

    fn add_bias(&mut self, value: &RingTensor, bias: &Arc<RingTensor>) -> Result<RingTensor> {
        Ok(value.broadcast_add_bias(bias)?)
    }

    fn conv2d_weight(
        &mut self,
        value: &RingTensor,
        weight: &Arc<RingTensor>,
        stride: usize,
        padding: usize,
    ) -> Result<RingTensor> {
        Ok(value.conv2d(weight, stride, padding)?)
    }

    fn matmul_weight(
        &mut self,
        value: &RingTensor,
        weight: &Arc<RingTensor>,
    ) -> Result<RingTensor> {
        matmul_dimensions("matmul_weight", value.shape(), weight.shape())?;
        Ok(value.matmul(weight)?)
    }

    fn mul_weight(&mut self, value: &RingTensor, weight: &Arc<RingTensor>) -> Result<RingTensor> {
        row_scaled(value, weight)
    }

    fn mul(&mut self, left: &RingTensor, right: &RingTensor) -> Result<RingTensor> {
        Ok(left.mul(right)?)
    }

    fn matmul(&mut self, left: &RingTensor, right: &RingTensor) -> Result<RingTensor> {
        batched_matmul(left, right)
    }

    fn truncate(&mut self, value: &RingTensor, bits: u32) -> Result<RingTensor> {
        check_shift(bits)?;
        Ok(value.map(|x| ((x as i64) >> bits) as u64))
    }

    fn drelu(&mut self, value: &RingTensor, bits: u32) -> Result<RingTensor> {
        check_bits("drelu", bits)?;
        self.check_comparison_range("drelu", value, bits)?;
        Ok(value.map(|x| u64::from(signed_reduction(x, bits) >= 0)))
    }

    fn relu(&mut self, value: &RingTensor, bits: u32) -> Result<RingTensor> {
        check_bits("relu", bits)?;
        self.check_comparison_range("relu", value, bits)?;
        Ok(value.map(|x| if signed_reduction(x, bits) >= 0 { x } else { 0 }))
    }

    fn lookup(&mut self, value: &RingTensor, table: &[u64], bits: u32) -> Result<RingTensor> {
        check_table(table, bits)?;
        let mask = (1u64 << bits) - 1;
        Ok(value.map(|x| table[(x & mask) as usize]))
    }

    fn reveal_to_client(&mut self, value: &RingTensor) -> Result<Option<RingTensor>> {
        Ok(Some(value.clone()))
    }

    fn check_range(
        &mut self,
        value: &RingTensor,
        fractional_bits: u32,
        range: std::ops::Range<f64>,
        what: &'static str,
    ) -> Result<()> {
        if !self.check_ranges {
            return Ok(());
        }
        let scale = 2f64.powi(fractional_bits as i32);
        if value
            .data()
            .iter()
            .all(|&x| range.contains(&((x as i64) as f64 / scale)))
        {
            return Ok(());
        }
        Err(Error::OutOfRange {
            op: what,
            detail: format!(
                "a value leaves the documented range [{:.3e}, {:.3e})",
                range.start, range.end
            ),
        })
    }
}
