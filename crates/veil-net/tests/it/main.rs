//! veil-net's integration tests: one binary, topic modules.
//!
//! `handshake_deadline` counts this process's open file descriptors and threads, so it
//! must be the only test in this binary that opens sockets or starts threads.

mod handshake_deadline;
