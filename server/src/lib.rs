//! The stacklab server: the lessons' static files and the live-demo API.
//!
//! | module | what lives there | may import |
//! | --- | --- | --- |
//! | [`http`] | routes, handlers, extractors, `AppError`, static files, health | engine, store, backends, cli |
//! | [`engine`] | runs, their timelines, the registry, queues, density, labs | backends, store |
//! | [`backends`] | the `Runtime` trait; Docker and KVM runtimes; host facts | `stacklab_api`, `stacklab_vmm` |
//! | [`store`] | the run history (SQLite) and its exports | `stacklab_api` |
//! | [`tools`] | the CLI subcommands: image, linux build, nested, bench | backends, engine, store, cli |
//! | [`cli`] | the command line's flags | nothing |
//!
//! Dependencies point one way (http → engine → backends/store); nothing
//! below imports from above.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod backends;
pub mod cli;
pub mod engine;
pub mod http;
pub mod store;
pub mod tools;

pub use engine::Settings;
pub use http::{app, run, AppState};
