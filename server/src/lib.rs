//! The stacklab server: the lessons' static files and the live-demo API.
//!
//! | module | what lives there | may import |
//! | --- | --- | --- |
//! | [`http`] | routes, handlers, extractors, `AppError`, static files, embeds, health, replicas | engine, store, backends, site, cli, http1 |
//! | [`engine`] | runs, their timelines, the registry, queues, density, labs | backends, store |
//! | [`backends`] | the `Runtime` trait; Docker and KVM runtimes; host facts | `stacklab_api`, `stacklab_vmm` |
//! | [`site`] | the app's pages as documents: the shell, their static form, their CSP | `stacklab_content` |
//! | [`store`] | the run history, classes, events and heartbeats (SQLite or PostgreSQL) and its exports | `stacklab_api` |
//! | [`http1`] | one HTTP/1.0 request as a client (handover, benches) | nothing |
//! | [`tools`] | the CLI subcommands: image, linux build, nested, bench, export | backends, engine, store, site, cli, http1 |
//! | [`cli`] | the command line's flags | nothing |
//!
//! Dependencies point one way (http → engine → backends/store); nothing
//! below imports from above.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod backends;
pub mod cli;
pub mod engine;
pub mod http;
pub mod http1;
pub mod site;
pub mod store;
pub mod tools;

pub use engine::Settings;
pub use http::{app, run, AppState};
