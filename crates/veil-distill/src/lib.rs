//! veil-distill: trains teachers and MPC-friendly students with knowledge distillation.
