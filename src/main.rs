//! The `opslab` binary: parse, set up logging, dispatch. The command line and its handlers live here,
//! beside the library, so that `anyhow` stays out of it.

mod cli;
mod commands;

use clap::Parser;
use cli::{AuditCommand, Cli, Command, GetResource, ScenarioCommand};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The message and its causes, without a backtrace: for people, not debuggers.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let default_filter = match cli.command {
        Command::Controller(_) => "info",
        Command::Crd
        | Command::Get(_)
        | Command::Sessions(_)
        | Command::Show(_)
        | Command::Follow(_)
        | Command::Audit(_)
        | Command::Scenario(_) => "warn",
    };
    opslab::telemetry::init(cli.log_format, default_filter);
    let output = match cli.command {
        Command::Controller(mut args) => {
            // The replay provider's server, kept until the controller stops.
            let _replay = args.start_replay().await?;
            let config = args.into_config().map_err(anyhow::Error::msg)?;
            commands::run_controller(config).await?;
            return Ok(());
        }
        Command::Crd => commands::crd_yaml()?,
        Command::Get(get) => match get.resource {
            GetResource::Incidents(args) => commands::get_incidents(args).await?,
        },
        Command::Sessions(args) => commands::list_sessions(args).await?,
        Command::Show(args) => commands::show(args).await?,
        Command::Follow(args) => {
            commands::follow(args, &mut std::io::stdout()).await?;
            return Ok(());
        }
        Command::Scenario(scenario) => match scenario.command {
            ScenarioCommand::Run(args) => {
                let (output, passed) = commands::scenario_run(args).await?;
                print!("{output}");
                if !passed {
                    std::process::exit(1);
                }
                return Ok(());
            }
            ScenarioCommand::List { scenarios } => commands::scenario_list(&scenarios)?,
        },
        Command::Audit(audit) => match audit.command {
            AuditCommand::Verify { session, store } => {
                commands::audit_verify(session, store).await?
            }
        },
    };
    print!("{output}");
    Ok(())
}
