//! `maestro-cli` binary; see the crate docs.

use clap::Parser;
use maestro_cli::Cli;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    maestro_control::init_tracing("warn,rumqttd=off");
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("maestro-cli: error: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        maestro_control::cancel_on_signals(shutdown.clone());
        maestro_cli::run(cli, shutdown).await
    });
    match result {
        Ok(outcome) => {
            if !outcome.stdout.is_empty() {
                println!("{}", outcome.stdout);
            }
            if let Some(problem) = outcome.problem {
                eprintln!("maestro-cli: {problem}");
            }
            ExitCode::from(outcome.code)
        }
        Err(e) => {
            eprintln!("maestro-cli: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
