//! The `llmb` command line: clap definitions ([`args`]) turned once into the engine's typed
//! configuration ([`config`]), and one module per subcommand (`bench`, `sim`, `plugins`,
//! `scaffold`, `selfbench`, `datasets`, `recipe`, `report`, `multi_turn`). The measuring lives
//! in `llmb-engine`, the simulator in `llmb-sim`, the outputs in `llmb-report`; see
//! docs/architecture.md.

pub mod args;
pub mod bench;
pub mod campaign;
pub mod compare;
pub mod config;
pub mod datasets;
pub mod merge;
pub mod multi_turn;
pub mod plugin_cmd;
pub mod plugins;
pub mod recipe;
pub mod report;
pub mod scaffold;
pub mod search;
pub mod selfbench;
pub mod sim;
