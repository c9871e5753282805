//! An address-keyed table of parked futex waiters.
