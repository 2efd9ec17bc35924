//! Pool before ReLU: ReLU(maxpool(x)) = maxpool(ReLU(x)), and the left side needs k²
//! times fewer comparisons, so a ReLU directly followed by a max pool is moved after it.

use super::batch_norm::Folded;
use crate::import::architecture::Layer;

/// Moves each ReLU that directly precedes a max pool to after it.
pub(crate) fn pool_before_relu(
    mut layers: Vec<(Layer, Option<Folded>)>,
) -> Vec<(Layer, Option<Folded>)> {
    let mut index = 0;
    while index + 1 < layers.len() {
        let relu_then_pool = matches!(layers[index].0, Layer::Relu { name: None, .. })
            && matches!(layers[index + 1].0, Layer::MaxPool2d { .. });
        if relu_then_pool {
            layers.swap(index, index + 1);
            index += 2;
        } else {
            index += 1;
        }
    }
    layers
}
