//! What a change to attendance sets off, and who hears of it: the warning rules evaluated
//! in the change's own transaction, and the webhooks' signed outbox and its delivery. It
//! imports the attendance core ([`super::attendance`]) and nothing of the contexts that
//! make changes (they call [`consequences::follow`]).

pub(crate) mod consequences;
pub mod warnings;
pub mod webhooks;
