//! The gateway's own HTTP surface beside the proxied routes: the operations endpoints
//! (`/-/…`, [`ops`]) and the user page with its forms ([`web`]).

pub mod ops;
pub mod web;
