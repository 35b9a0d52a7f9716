//! HTTP relay: lets users reach HTTP endpoints (web UIs, the Kubernetes API, Prometheus,
//! gRPC services) on robots and experiments that have no public address. Wire-compatible
//! with Google Cloud Robotics' `http-relay-server` / `http-relay-client`, so either side can
//! be swapped for ours without touching the other.
//!
//! The relay-server holds each user request until a relay-client, polling from next to the
//! backend, takes it (`GET /server/request`), replays it locally and streams the answer back
//! as a series of protobuf messages (`POST /server/response`). Upgraded connections (101:
//! websockets, `kubectl exec`) pull their user-side bytes through `/server/requeststream`.
//!
//! Modules:
//! - [`proto`]: the protobuf wire types (proto2, prost derives with the reference's tags)
//!   and header conversions.
//! - [`broker`]: the server's matcher of requests to pollers and responses to requests,
//!   with the reapers' removal logic.
//! - [`server`]: `relay http serve`: routes, handlers, 101 hijack, shutdown.
//! - [`client`]: `relay http client`: poll loop, backend calls, response chunking, upgrades.
//! - [`auth`]: optional per-name authorisation of relay-clients with relay JWTs.
//! - [`metrics`]: the server's Prometheus metrics under the reference's names.

#![warn(missing_docs)]

pub mod auth;
pub mod broker;
pub mod client;
pub mod metrics;
pub mod proto;
pub mod server;

pub use client::{ClientConfig, ClientError};
pub use server::{RunningServer, ServerConfig};
