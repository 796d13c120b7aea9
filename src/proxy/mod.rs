//! The proxy wing, in the request's order: [`sanitize`] (refuse ambiguous requests, one
//! canonical path, strip identity headers) → [`route`] → admission in [`gateway`] (which
//! calls `authenticate`, `authorize` and `enforce`) → [`upstream`] (pools, selection,
//! health checks) → [`rewrite`] (the headers the upstream trusts).

mod admit;
pub mod ctx;
pub mod gateway;
mod observe;
mod respond;
pub mod rewrite;
pub mod route;
pub mod sanitize;
pub mod snapshot;
pub mod upstream;
