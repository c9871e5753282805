//! Attack rounds Y and Z in one test binary (each binary costs CI a link):
//! see each module's docs.

#[path = "../support/mod.rs"]
mod support;

mod y;
mod z;

use std::sync::Mutex;

/// One at a time, across both rounds: they install handlers on the same
/// signals and close numbers others use.
static SERIAL: Mutex<()> = Mutex::new(());
