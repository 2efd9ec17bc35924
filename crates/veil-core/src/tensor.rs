//! [`RingTensor`]: a shaped, row-major buffer of ring elements.

use crate::{Error, Result};

/// A row-major tensor over Z_2^64. All arithmetic wraps mod 2^64.
///
/// It may hold secrets (a weight, a share), so its `Debug` prints the shape only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RingTensor {
    shape: Vec<usize>,
    data: Vec<u64>,
}

impl std::fmt::Debug for RingTensor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "RingTensor {{ shape: {:?} }}", self.shape)
    }
}

/// The number of elements a shape holds.
pub fn element_count(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl RingTensor {
    /// A tensor from a shape and its row-major data.
    pub fn new(shape: Vec<usize>, data: Vec<u64>) -> Result<Self> {
        if element_count(&shape) != data.len() {
            return Err(Error::ShapeMismatch {
                op: "RingTensor::new",
                expected: shape,
                found: vec![data.len()],
            });
        }
        Ok(Self { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![0; element_count(shape)],
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The row-major elements.
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    /// The row-major elements, mutable.
    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }

    /// Takes the elements out.
    pub fn into_data(self) -> Vec<u64> {
        self.data
    }

    /// The same elements under another shape with as many elements.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        if element_count(shape) != self.data.len() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                expected: shape.to_vec(),
                found: self.shape,
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            data: self.data,
        })
    }

    fn check_same_shape(&self, other: &Self, op: &'static str) -> Result<()> {
        if self.shape != other.shape {
            return Err(Error::ShapeMismatch {
                op,
                expected: self.shape.clone(),
                found: other.shape.clone(),
            });
        }
        Ok(())
    }

    /// Elementwise sum.
    pub fn add(&self, other: &Self) -> Result<Self> {
        self.zip_with(other, "add", u64::wrapping_add)
    }

    /// Elementwise difference.
    pub fn sub(&self, other: &Self) -> Result<Self> {
        self.zip_with(other, "sub", u64::wrapping_sub)
    }

    /// Elementwise product.
    pub fn mul(&self, other: &Self) -> Result<Self> {
        self.zip_with(other, "mul", u64::wrapping_mul)
    }

    /// Adds `other` in place.
    pub fn add_assign(&mut self, other: &Self) -> Result<()> {
        self.check_same_shape(other, "add_assign")?;
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a = a.wrapping_add(*b);
        }
        Ok(())
    }

    /// Subtracts `other` in place.
    pub fn sub_assign(&mut self, other: &Self) -> Result<()> {
        self.check_same_shape(other, "sub_assign")?;
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a = a.wrapping_sub(*b);
        }
        Ok(())
    }

    /// Elementwise negation.
    pub fn neg(&self) -> Self {
        self.map(u64::wrapping_neg)
    }

    /// Applies `function` to every element.
    pub fn map(&self, function: impl Fn(u64) -> u64) -> Self {
        Self {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&x| function(x)).collect(),
        }
    }

    fn zip_with(
        &self,
        other: &Self,
        op: &'static str,
        function: fn(u64, u64) -> u64,
    ) -> Result<Self> {
        self.check_same_shape(other, op)?;
        Ok(Self {
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(&a, &b)| function(a, b))
                .collect(),
        })
    }

    /// Adds a row vector (shape `[n]`) to every row of a `[.., n]` tensor.
    pub fn broadcast_add_row(&self, row: &Self) -> Result<Self> {
        let n = row.len();
        if row.shape.len() != 1 || self.shape.last() != Some(&n) {
            return Err(Error::ShapeMismatch {
                op: "broadcast_add_row",
                expected: self.shape.last().map(|&n| vec![n]).unwrap_or_default(),
                found: row.shape.clone(),
            });
        }
        let mut out = self.clone();
        for chunk in out.data.chunks_mut(n.max(1)) {
            for (a, b) in chunk.iter_mut().zip(&row.data) {
                *a = a.wrapping_add(*b);
            }
        }
        Ok(out)
    }

    /// Adds a bias along dimension 1: a `[n]` row to every row of a `[m, n]` tensor, or a
    /// `[c]` per-channel value to every position of a `[b, c, ...]` tensor.
    pub fn broadcast_add_bias(&self, bias: &Self) -> Result<Self> {
        if self.shape.len() == 2 {
            return self.broadcast_add_row(bias);
        }
        let channels = bias.len();
        if bias.shape.len() != 1 || self.shape.len() < 3 || self.shape[1] != channels {
            return Err(Error::ShapeMismatch {
                op: "broadcast_add_bias",
                expected: self.shape.get(1).map(|&c| vec![c]).unwrap_or_default(),
                found: bias.shape.clone(),
            });
        }
        let plane: usize = self.shape[2..].iter().product();
        let mut out = self.clone();
        for (index, chunk) in out.data.chunks_mut(plane.max(1)).enumerate() {
            let value = bias.data[index % channels];
            for element in chunk.iter_mut() {
                *element = element.wrapping_add(value);
            }
        }
        Ok(out)
    }

    /// The elements of `parts` one after another, as a 1-D tensor.
    pub fn concat(parts: &[&Self]) -> Self {
        let data: Vec<u64> = parts
            .iter()
            .flat_map(|part| part.data.iter().copied())
            .collect();
        Self {
            shape: vec![data.len()],
            data,
        }
    }

    /// A tensor of `shape` whose element i is `self[indices[i]]`.
    pub fn gather(&self, indices: &[usize], shape: &[usize]) -> Result<Self> {
        if element_count(shape) != indices.len() || indices.iter().any(|&i| i >= self.data.len()) {
            return Err(Error::ShapeMismatch {
                op: "gather",
                expected: shape.to_vec(),
                found: vec![indices.len()],
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            data: indices.iter().map(|&i| self.data[i]).collect(),
        })
    }

    /// 2-D convolution of a `[n, c, h, w]` tensor with `[o, c, kh, kw]` weights, mod 2^64
    /// (im2col + GEMM), zero padding.
    pub fn conv2d(&self, weight: &Self, stride: usize, padding: usize) -> Result<Self> {
        let geometry = match (self.shape.as_slice(), weight.shape.as_slice()) {
            (
                &[batch, in_channels, height, width],
                &[out_channels, weight_channels, kernel_height, kernel_width],
            ) if in_channels == weight_channels => crate::kernels::Conv2dShape {
                batch,
                in_channels,
                height,
                width,
                out_channels,
                kernel_height,
                kernel_width,
                stride,
                padding,
            },
            _ => {
                return Err(Error::ShapeMismatch {
                    op: "conv2d",
                    expected: self.shape.clone(),
                    found: weight.shape.clone(),
                });
            }
        };
        geometry.validate()?;
        let mut out = vec![0u64; geometry.output_len()];
        crate::kernels::conv2d_u64(&geometry, &self.data, &weight.data, &mut out)?;
        Ok(Self {
            shape: vec![
                geometry.batch,
                geometry.out_channels,
                geometry.output_height(),
                geometry.output_width(),
            ],
            data: out,
        })
    }

    /// Matrix product of a `[m, k]` and a `[k, n]` tensor, mod 2^64.
    pub fn matmul(&self, other: &Self) -> Result<Self> {
        let (m, k, n) = match (self.shape.as_slice(), other.shape.as_slice()) {
            (&[m, k], &[k2, n]) if k == k2 => (m, k, n),
            _ => {
                return Err(Error::ShapeMismatch {
                    op: "matmul",
                    expected: self.shape.clone(),
                    found: other.shape.clone(),
                });
            }
        };
        let mut out = vec![0u64; m * n];
        crate::kernels::gemm_u64(m, k, n, &self.data, &other.data, &mut out)?;
        Ok(Self {
            shape: vec![m, n],
            data: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_shape_only() {
        let tensor = RingTensor::new(vec![2], vec![123_456_789, 987_654_321]).unwrap();
        let printed = format!("{tensor:?}");
        assert!(!printed.contains("123456789"));
        assert!(printed.contains("[2]"));
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(RingTensor::new(vec![2, 3], vec![0; 5]).is_err());
        let a = RingTensor::zeros(&[2, 3]);
        let b = RingTensor::zeros(&[3, 2]);
        assert!(a.add(&b).is_err());
        assert!(a.matmul(&a).is_err());
        assert!(a.matmul(&b).is_ok());
    }
}
