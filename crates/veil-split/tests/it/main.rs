//! veil-split's integration tests: split and blinded execution against plain execution,
//! the worker's refusals, and split training against plain training.

mod bench;
mod equivalence;
mod training;
mod worker;

use veil_core::sampling::SplitMix64;
use veil_net::MemoryChannel;
use veil_split::network::SIDE;
use veil_split::worker::Worker;

/// Smooth, non-negative synthetic 28×28 images (blobs), so activations have the low-rank
/// structure real images give them.
pub fn synthetic_images(count: usize, seed: u64) -> Vec<f32> {
    let mut random = SplitMix64::new(seed);
    let mut images = vec![0f32; count * SIDE * SIDE];
    for image in images.chunks_mut(SIDE * SIDE) {
        for _ in 0..3 {
            let (cy, cx) = (random.next_f64() * 28.0, random.next_f64() * 28.0);
            let radius = 3.0 + random.next_f64() * 6.0;
            let brightness = 0.3 + 0.7 * random.next_f64();
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let distance = ((y as f64 - cy).powi(2) + (x as f64 - cx).powi(2)).sqrt();
                    if distance < radius {
                        image[y * SIDE + x] = (image[y * SIDE + x] + brightness as f32).min(1.0);
                    }
                }
            }
        }
    }
    images
}

/// A worker thread on an in-memory channel; returns the trusted side's end.
pub fn spawn_worker(
    threads: usize,
) -> (
    MemoryChannel,
    std::thread::JoinHandle<veil_split::Result<()>>,
) {
    let (trusted, mut untrusted) = veil_net::memory_pair();
    let handle = std::thread::spawn(move || Worker::new(threads).serve(&mut untrusted));
    (trusted, handle)
}
