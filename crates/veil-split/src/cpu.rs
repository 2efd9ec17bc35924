//! The calling thread's CPU time, so the trusted runtime's compute is measured apart
//! from the time it is preempted by the worker's threads on a shared machine.

use std::time::{Duration, Instant};

/// The calling thread's time on a CPU, from Linux's `/proc/thread-self/schedstat` (its
/// first field, in nanoseconds); `None` where that file is absent.
pub fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanoseconds))
}

/// Wall time and this thread's CPU time since it started.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    wall: Instant,
    cpu: Option<Duration>,
}

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Stopwatch {
        Stopwatch {
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    /// Wall time elapsed.
    pub fn wall(&self) -> Duration {
        self.wall.elapsed()
    }

    /// This thread's CPU time elapsed, or `fallback` where it cannot be read.
    pub fn cpu_or(&self, fallback: Duration) -> Duration {
        match (self.cpu, thread_cpu_time()) {
            (Some(start), Some(now)) => now.saturating_sub(start),
            _ => fallback,
        }
    }
}
