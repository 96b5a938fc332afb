//! The `opslab` binary: parse, set up logging, dispatch. The command line and its handlers live here,
//! beside the library, so that `anyhow` stays out of it.

mod cli;
mod commands;
mod request;

use clap::{CommandFactory, Parser};
use cli::{AuditCommand, Cli, Command, DescribeResource, GetResource, ScenarioCommand};
use opslab::source::requests::Request;

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
        | Command::Describe(_)
        | Command::Sessions(_)
        | Command::Show(_)
        | Command::Follow(_)
        | Command::Retry(_)
        | Command::Cancel(_)
        | Command::Audit(_)
        | Command::Console(_)
        | Command::Scenario(_)
        | Command::Completion { .. }
        | Command::Man => "warn",
    };
    opslab::telemetry::init(cli.log_format, default_filter);
    let output = match cli.command {
        Command::Controller(mut args) => {
            // The replay provider's server, kept until the controller stops.
            let _replay = args.start_replay().await?;
            let console = args.console.clone();
            let grace = args.shutdown_grace();
            let config = args.into_config().map_err(anyhow::Error::msg)?;
            commands::run_controller(config, console, grace).await?;
            return Ok(());
        }
        Command::Crd => commands::crd_yaml()?,
        Command::Get(get) => match get.resource {
            GetResource::Incidents(args) => {
                commands::get_incidents(args, &mut std::io::stdout(), &mut std::io::stderr())
                    .await?;
                return Ok(());
            }
        },
        Command::Describe(describe) => match describe.resource {
            DescribeResource::Incident(args) => commands::describe_incident(args).await?,
        },
        Command::Sessions(args) => commands::list_sessions(args).await?,
        Command::Retry(args) => request::run(Request::Retry, args).await?,
        Command::Cancel(args) => request::run(Request::Cancel, args).await?,
        Command::Show(args) => commands::show(args).await?,
        Command::Follow(args) => {
            commands::follow(args, &mut std::io::stdout(), &mut std::io::stderr()).await?;
            return Ok(());
        }
        Command::Scenario(scenario) => match scenario.command {
            ScenarioCommand::Run(args) => {
                let (output, passed) = commands::scenario_run(*args).await?;
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
        Command::Console(args) => {
            commands::console(args).await?;
            return Ok(());
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "opslab", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(());
        }
    };
    print!("{output}");
    Ok(())
}
