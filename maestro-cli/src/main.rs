//! `maestro-cli` binary; see the crate docs.

use clap::Parser;
use maestro_cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    maestro_control::init_tracing("warn,rumqttd=off");
    let cli = Cli::parse();
    let result = match maestro_control::run_until_signal(|shutdown| maestro_cli::run(cli, shutdown))
    {
        Ok(result) => result,
        Err(e) => {
            eprintln!("maestro-cli: error: cannot start the runtime: {e}");
            return ExitCode::from(maestro_cli::exit::INTERNAL);
        }
    };
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
