//! Ways units get into the store: pushed by service accounts ([`push`]).

pub mod push;
