//! The `taskrunner` command: parses the command line and hands over to the library.

use std::process::ExitCode;

use taskrunner::config::{Cli, Command};
use taskrunner::{graphql, healthcheck, server, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; a broken one is worth a word.
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("warning: could not read .env: {error}");
    }
    let cli = Cli::parse_or_exit();
    // Its one line on stdout or stderr is all a health check says.
    if let Some(Command::Healthcheck(args)) = &cli.command {
        return healthcheck::run(args).await;
    }
    telemetry::init(cli.log.log_format);

    let outcome = match cli.command {
        Some(Command::Schema) => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Some(Command::Migrate(database)) => server::migrate(database).await,
        Some(Command::Token(args)) => server::token(args).await,
        Some(Command::Tenant(command)) => server::tenant(command).await,
        Some(Command::Mcp(args)) => server::mcp(args).await,
        Some(Command::Serve(args)) => server::serve(args).await,
        Some(Command::Worker(args)) => server::worker(args).await,
        Some(Command::Healthcheck(_)) => Ok(()),
        None => server::serve(cli.serve).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

// glibc's malloc/free was 17% of the server's CPU under load (BENCHMARKS.md);
// mimalloc serves the many small, short-lived allocations of GraphQL requests faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
