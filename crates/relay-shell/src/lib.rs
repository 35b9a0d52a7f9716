//! SSH, or any TCP service, to an experiment behind NAT, through the relay (shell spec §1).
//!
//! The experiment runs [`host`]: one management connection to the relay that never ends
//! (reconnecting with backoff), and for each `connect` action it receives, one websocket to
//! the given pair topic and one TCP connection to the local service (sshd by default). The
//! admin runs [`client`]: a local TCP listener whose every accepted connection gets exactly
//! one relay connection of its own. [`pipe`] copies bytes between a TCP stream and a
//! websocket, both ways, and closes each side when the other ends.
//!
//! - [`host`], [`client`], [`pipe`]: as above. The actions the host obeys are
//!   `relay_common::action::ConnectionAction`, which the relay builds.

#![warn(missing_docs)]

pub mod client;
pub mod host;
pub mod pipe;
