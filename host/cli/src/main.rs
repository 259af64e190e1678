use clap::Parser;
use llmb::args::{Cli, Command, DatasetCommand, PluginCommand};

/// Small on purpose: each subcommand is a module of the `llmb` library, so tests drive the
/// same code.
fn main() {
    let cli = Cli::parse();
    let requested = match &cli.command {
        Command::Bench(args) => args.client_threads,
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(llmb::args::client_threads(requested))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Bench(args) => llmb::bench::main(*args).await,
            Command::Sim(args) => llmb::sim::serve_sim(args).await,
            Command::Plugins(args) => llmb::plugins::list_plugins(&args),
            Command::Plugin(PluginCommand::New(args)) => llmb::scaffold::main(&args),
            Command::Selfbench(args) => llmb::selfbench::run(args).await,
            Command::Dataset(DatasetCommand::Stats(args)) => llmb::datasets::stats(&args),
            Command::Dataset(DatasetCommand::Convert(args)) => llmb::datasets::convert(&args),
            Command::Aggregate(args) => llmb::report::aggregate(&args),
            Command::Run(args) => llmb::recipe::run(&args).await,
            Command::Report(args) => llmb::report::main(&args),
            Command::MultiTurn(args) => llmb::multi_turn::main(*args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {}", llmb_engine::secrets::scrub(&format!("{e:#}")));
        std::process::exit(1);
    }
}
