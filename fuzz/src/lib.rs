//! Shared code of the fuzz targets: [`checks`] (the invariants, also
//! replayed by `tests/fuzz_regressions.rs`), [`cli_checks`] (the
//! command-line tool's, replayed by `cli/tests/fuzz_regressions.rs`) and
//! [`gen`] (structured inputs built with `arbitrary`).
#![allow(missing_docs)]

pub mod checks;
pub mod cli_checks;
pub mod gen;
