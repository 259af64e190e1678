use llmb::args::{Command, DatasetCommand, PluginCommand};

/// Small on purpose: each subcommand is a module of the `llmb` library, so tests drive the
/// same code.
fn main() {
    let cli = llmb::args::parse_command_line();
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
            Command::Bench(args) => llmb::campaign::main(*args).await,
            Command::Sim(args) => llmb::sim::serve_sim(args).await,
            Command::Plugins(args) => llmb::plugins::list_plugins(&args),
            Command::Plugin(command) => plugin_command(command).await,
            Command::Selfbench(args) => llmb::selfbench::run(args).await,
            Command::Dataset(DatasetCommand::Stats(args)) => llmb::datasets::stats(&args),
            Command::Dataset(DatasetCommand::Convert(args)) => llmb::datasets::convert(&args),
            Command::Aggregate(args) => llmb::report::aggregate(&args),
            Command::Merge(args) => llmb::merge::main(&args),
            Command::Compare(args) => llmb::compare::main(&args),
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

async fn plugin_command(command: PluginCommand) -> anyhow::Result<()> {
    use llmb::plugin_cmd;
    match command {
        PluginCommand::New(args) => llmb::scaffold::main(&args),
        PluginCommand::Export(args) => plugin_cmd::export(&args),
        PluginCommand::Search(args) => plugin_cmd::search(&args).await,
        PluginCommand::Install(args) => plugin_cmd::install(&args).await,
        PluginCommand::List => plugin_cmd::list(),
        PluginCommand::Update(args) => plugin_cmd::update(&args).await,
        PluginCommand::Remove(args) => plugin_cmd::remove(&args),
        PluginCommand::Verify(args) => plugin_cmd::verify(&args),
        PluginCommand::Trust(args) => plugin_cmd::trust(&args),
        PluginCommand::Keygen(args) => plugin_cmd::keygen(&args),
        PluginCommand::Publish(args) => plugin_cmd::publish(&args),
        PluginCommand::Index(args) => plugin_cmd::index(&args),
        PluginCommand::Lock(args) => plugin_cmd::lock(&args),
    }
}
