//! Project automation library behind `cargo xtask` (usable from tests and benches).

pub mod fixtures;
