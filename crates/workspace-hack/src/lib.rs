//! Holds no code: its dependencies give every build of the workspace's binaries and tests one
//! feature set, so that Burn compiles once (see this crate's Cargo.toml).
