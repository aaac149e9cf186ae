//! Authorization: who may do what. The role table for every root operation, the role
//! matrix at the service methods themselves (every transport calls them), the same
//! refusals in the service without a GraphQL guard in front of it, another teacher's ids
//! changing and revealing nothing, and what a teacher sees of their own courses only.

mod objects;
mod ownership;
mod roles;
mod service;
mod service_roles;
