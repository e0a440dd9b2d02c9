//! Shared code of the fuzz targets: [`checks`] (the invariants, also
//! replayed by `tests/fuzz_regressions.rs`) and [`gen`] (structured inputs
//! built with `arbitrary`).
#![allow(missing_docs)]

pub mod checks;
pub mod gen;
