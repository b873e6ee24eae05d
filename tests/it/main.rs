//! kite's end-to-end tests, one binary: each module a surface or a promise, over real
//! PostgreSQL and RabbitMQ (each test its own database and AMQP names, so they run in
//! parallel; nextest runs each test in its own process).

#[path = "../common/mod.rs"]
mod common;

mod api;
mod cli;
mod conduct;
mod dashboard;
mod dashboard_work;
mod faults;
mod filters;
mod guides;
mod hostile;
mod hostile_bounds;
mod hostile_peer;
mod inprocess;
mod interop;
mod interop_http;
mod listen;
mod observability;
mod openapi;
mod operational;
mod operator;
mod peering;
mod pipeline;
mod provenance;
mod security;
mod security_edges;
mod setup;
mod stages;
mod story;
mod teams;
mod tls;
mod traces;
