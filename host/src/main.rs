use clap::Parser;
use llmb::cli::{Cli, Command};

/// Small on purpose: everything lives in the library so tests drive the same code.
fn main() {
    let cli = Cli::parse();
    let requested = match &cli.command {
        Command::Bench(args) => args.client_threads,
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(llmb::cli::client_threads(requested))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Bench(args) => llmb::bench::main(*args).await,
            Command::Sim(args) => llmb::bench::serve_sim(args).await,
            Command::Plugins(args) => llmb::bench::list_plugins(&args),
            Command::Plugin(llmb::cli::PluginCommand::New(args)) => {
                llmb::scaffold::new_adapter(&args).map(|dir| {
                    println!(
                        "Created {dir}. Build it with `cd {dir} && cargo build --release`, then run\n  \
                         llmb bench --plugin {wasm} --backend {name} --base-url http://127.0.0.1:8000",
                        dir = dir.display(),
                        wasm = llmb::scaffold::built_wasm(&dir, &args.name).display(),
                        name = args.name
                    );
                })
            }
            Command::Selfbench(args) => llmb::selfbench::run(args).await,
            Command::Dataset(llmb::cli::DatasetCommand::Stats(args)) => {
                llmb::datasets::stats(&args)
            }
            Command::Dataset(llmb::cli::DatasetCommand::Convert(args)) => {
                llmb::datasets::convert(&args)
            }
            Command::Aggregate(args) => llmb::export::aggregate(&args),
            Command::Run(args) => llmb::recipe::run(&args).await,
            Command::Report(args) => llmb::html::main(&args),
            Command::MultiTurn(args) => llmb::multi_turn::main(*args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {}", llmb::secrets::scrub(&format!("{e:#}")));
        std::process::exit(1);
    }
}
