//! veil-model's integration tests: one binary, one module per topic.

mod compile;
mod inputs;
mod plan_format;
