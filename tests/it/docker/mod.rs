//! docker/Dockerfile and docker/compose.yaml against the binary. No
//! container engine runs here, so these tests are what keeps the two files
//! true to it: every command line they run parses as the binary's own
//! command line does, every variable they set is one it reads (and its value
//! one it accepts), the ports they expose and publish are the ones it binds,
//! the health checks ask where it listens, and the paths they use exist (the
//! binary where the image runs it, the health check's path on a served
//! application, the Dockerfile beside the compose file).

mod compose;
mod dockerfile;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use reqwest::Url;
use taskrunner::config::{Cli, Command, ServeArgs};
use taskrunner::providers::config::PROVIDER_ENV_VARS;

use crate::harness::TestApp;
use compose::{ComposeFile, Service};
use dockerfile::{Dockerfile, exec_form, leading_options};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn dockerfile() -> Dockerfile {
    Dockerfile::parse(&read("docker/Dockerfile"))
}

fn compose_file() -> ComposeFile {
    ComposeFile::parse(&read("docker/compose.yaml"))
}

/// The file name of the binary cargo builds (`--bin`).
fn binary_name() -> String {
    Path::new(env!("CARGO_BIN_EXE_taskrunner"))
        .file_name()
        .and_then(OsStr::to_str)
        .expect("the binary has a name")
        .to_owned()
}

/// What the image runs, as it declares it.
struct Image {
    /// Where the binary is copied to.
    binary: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
    env: BTreeMap<String, Option<String>>,
    exposed: Vec<u16>,
}

fn image() -> Image {
    let docker = dockerfile();
    let runtime = docker.runtime();
    let (copy_options, copied) = leading_options(runtime.one("COPY"));
    let binary = copied
        .split_whitespace()
        .nth(1)
        .expect("COPY names a destination")
        .to_owned();
    assert!(
        copy_options.contains_key("from"),
        "the runtime stage copies the binary from the build"
    );
    let (_, check) = leading_options(runtime.one("HEALTHCHECK"));
    let check = check
        .strip_prefix("CMD ")
        .expect("HEALTHCHECK runs a command (CMD)");
    let exposed = runtime
        .all("EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .map(|port| {
            let port = port.trim_end_matches("/tcp");
            port.parse()
                .unwrap_or_else(|_| panic!("EXPOSE {port:?}: a TCP port"))
        })
        .collect();
    Image {
        binary,
        entrypoint: exec_form(runtime.one("ENTRYPOINT")),
        cmd: exec_form(runtime.one("CMD")),
        healthcheck: exec_form(check),
        env: runtime
            .env()
            .into_iter()
            .map(|(name, value)| (name, Some(value)))
            .collect(),
        exposed,
    }
}

/// The subcommand a command line runs (`None`: the default, `serve`).
fn subcommand(argv: &[String]) -> Option<String> {
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .unwrap_or_else(|error| panic!("{argv:?} is not a taskrunner command line:\n{error}"));
    matches.subcommand_name().map(str::to_owned)
}

/// The options of that subcommand, the global ones included.
fn options_of(subcommand: Option<&str>) -> clap::Command {
    let mut root = Cli::command();
    root.build();
    match subcommand {
        None => root,
        Some(name) => root
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("no subcommand {name}"))
            .clone(),
    }
}

/// The option that reads `variable` in that subcommand.
fn option_reading(subcommand: Option<&str>, variable: &str) -> Option<clap::Arg> {
    options_of(subcommand)
        .get_arguments()
        .find(|arg| arg.get_env() == Some(OsStr::new(variable)))
        .cloned()
}

/// Every variable in `env` is read by the command `argv` runs, and every
/// value given is one it accepts (each is given as its option, as the
/// binary reads it through the same parser).
fn check_environment(context: &str, argv: &[String], env: &BTreeMap<String, Option<String>>) {
    let subcommand = subcommand(argv);
    let shown = subcommand.as_deref().unwrap_or("(serve)");
    let reads_providers = option_reading(subcommand.as_deref(), "TASKRUNNER_CONFIG").is_some();
    for (name, value) in env {
        if name == tracing_subscriber::EnvFilter::DEFAULT_ENV {
            if let Some(value) = value {
                tracing_subscriber::EnvFilter::try_new(value)
                    .unwrap_or_else(|e| panic!("{context}: {name}={value:?}: {e}"));
            }
            continue;
        }
        if PROVIDER_ENV_VARS.contains(&name.as_str()) {
            assert!(
                reads_providers,
                "{context}: `taskrunner {shown}` reads no providers, so not {name}"
            );
            continue;
        }
        let option = option_reading(subcommand.as_deref(), name).unwrap_or_else(|| {
            panic!("{context}: {name} is read by no option of `taskrunner {shown}`")
        });
        if let Some(value) = value {
            let long = option
                .get_long()
                .expect("an option read from a variable is long");
            let probe = with_option(&argv[..1], subcommand.as_deref(), long, value);
            if let Err(error) = Cli::try_parse_from(&probe) {
                panic!("{context}: {name}={value:?} is refused by `taskrunner {shown}`:\n{error}");
            }
        }
    }
}

fn with_option(
    program: &[String],
    subcommand: Option<&str>,
    long: &str,
    value: &str,
) -> Vec<String> {
    let mut argv = program.to_vec();
    argv.extend(subcommand.map(str::to_owned));
    argv.extend([format!("--{long}"), value.to_owned()]);
    argv
}

/// `argv` as it runs with `env`: each variable its subcommand reads becomes
/// its option, unless the command line gives that option itself.
fn effective(argv: &[String], env: &BTreeMap<String, Option<String>>) -> Cli {
    let subcommand = subcommand(argv);
    let mut full = argv.to_vec();
    for (name, value) in env {
        let (Some(value), Some(option)) = (value, option_reading(subcommand.as_deref(), name))
        else {
            continue;
        };
        let long = format!("--{}", option.get_long().expect("a long option"));
        if !argv
            .iter()
            .any(|arg| arg == &long || arg.starts_with(&format!("{long}=")))
        {
            full.extend([long, value.clone()]);
        }
    }
    Cli::try_parse_from(&full).unwrap_or_else(|e| panic!("{full:?} does not parse:\n{e}"))
}

/// What `serve` would serve with, if this command line serves at all.
fn serving(cli: &Cli) -> Option<&ServeArgs> {
    match &cli.command {
        None => Some(&cli.serve),
        Some(Command::Serve(serve)) => Some(serve),
        Some(_) => None,
    }
}

/// The URL a health check command line asks.
fn health_url(context: &str, argv: &[String], env: &BTreeMap<String, Option<String>>) -> Url {
    let cli = effective(argv, env);
    let Some(Command::Healthcheck(args)) = &cli.command else {
        panic!("{context}: the health check {argv:?} does not run `taskrunner healthcheck`");
    };
    taskrunner::healthcheck::target(args).unwrap_or_else(|e| panic!("{context}: {e}"))
}

/// A health check asks its own container, on the port its process binds.
fn assert_asks_its_own(context: &str, url: &Url, bind: SocketAddr) {
    let host = url.host_str().unwrap_or_default();
    assert!(
        ["127.0.0.1", "[::1]", "localhost"].contains(&host),
        "{context}: the health check asks {url}, not its own container"
    );
    assert_eq!(
        url.port_or_known_default(),
        Some(bind.port()),
        "{context}: the health check asks {url}, but the process listens on {bind}"
    );
}

#[test]
fn the_image_runs_the_binary_the_build_makes() {
    let docker = dockerfile();
    let image = image();
    let bin = binary_name();
    let runtime = docker.runtime();
    let (copy_options, copied) = leading_options(runtime.one("COPY"));
    let builder = docker.stage(&copy_options["from"]);
    let workdir = docker.workdir(builder);
    let source = copied
        .split_whitespace()
        .next()
        .expect("COPY names a source");
    assert_eq!(source, format!("{workdir}/target/release/{bin}"));
    for (step, what) in [
        ("cargo chef cook", "dependencies"),
        ("cargo build", "binary"),
    ] {
        let run = builder
            .all("RUN")
            .into_iter()
            .find(|run| run.contains(step))
            .unwrap_or_else(|| panic!("the build stage has no `{step}` for the {what}"));
        let words: Vec<&str> = run.split_whitespace().collect();
        for flag in ["--release", "--locked"] {
            assert!(words.contains(&flag), "`{run}` lacks {flag}");
        }
        assert!(
            words.windows(2).any(|pair| pair == ["--bin", bin.as_str()]),
            "`{run}` does not build --bin {bin}"
        );
    }
    assert_eq!(
        image.entrypoint,
        std::slice::from_ref(&image.binary),
        "ENTRYPOINT runs the copied binary"
    );
    assert_eq!(
        image.healthcheck[0], image.binary,
        "HEALTHCHECK runs the copied binary"
    );
    assert!(
        runtime.all("RUN").is_empty(),
        "the runtime image has no shell to RUN with"
    );

    let user = runtime.one("USER");
    let ids: Vec<u32> = user
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("USER {user}: numeric ids"))
        })
        .collect();
    assert!(
        ids.len() == 2 && ids.iter().all(|id| *id != 0),
        "USER {user}: uid:gid, not root"
    );

    // The toolchain is one that builds the crate (rust-version or later).
    let toolchain = docker.stages[0]
        .image
        .strip_prefix("rust:")
        .expect("the build starts from the rust image");
    let version = |text: &str| -> Vec<u32> {
        text.split(['.', '-'])
            .map_while(|part| part.parse().ok())
            .collect()
    };
    assert!(
        version(toolchain) >= version(env!("CARGO_PKG_RUST_VERSION")),
        "rust:{toolchain} is older than the crate's rust-version"
    );
}

#[test]
fn the_images_command_lines_variables_and_port_are_the_binarys() {
    let image = image();
    let default: Vec<String> = image.entrypoint.iter().chain(&image.cmd).cloned().collect();
    // The image's variables are its default command's; the health check
    // runs beside it and reads those it has an option for (whether it finds
    // the server is checked below).
    check_environment("the image (its CMD)", &default, &image.env);
    let check = subcommand(&image.healthcheck);
    let read_by_check = image
        .env
        .iter()
        .filter(|(name, _)| option_reading(check.as_deref(), name).is_some())
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    check_environment(
        "the image (its HEALTHCHECK)",
        &image.healthcheck,
        &read_by_check,
    );

    let cli = effective(&default, &image.env);
    let serve = serving(&cli).expect("the image's default command serves");
    assert!(
        serve.bind.ip().is_unspecified(),
        "the image listens on {}, which other containers cannot reach",
        serve.bind
    );
    assert_eq!(
        image.exposed,
        [serve.bind.port()],
        "EXPOSE is the port serve binds"
    );
    let url = health_url("the image", &image.healthcheck, &image.env);
    assert_asks_its_own("the image", &url, serve.bind);
}

/// A service that runs the image built from docker/Dockerfile.
fn builds_the_image(service: &Service) -> bool {
    let Some(build) = service.get("build") else {
        return false;
    };
    let context = build["context"].as_str().expect("build.context");
    let dockerfile = build["dockerfile"].as_str().expect("build.dockerfile");
    let context = repo().join("docker").join(context);
    assert_eq!(
        context.canonicalize().expect("the build context exists"),
        repo().canonicalize().expect("the repository"),
        "{}: the build context is the repository",
        service.name
    );
    assert_eq!(
        context.join(dockerfile).canonicalize().ok(),
        repo().join("docker/Dockerfile").canonicalize().ok(),
        "{}: the build uses docker/Dockerfile",
        service.name
    );
    true
}

#[test]
fn each_service_runs_a_command_the_binary_has_with_variables_it_reads() {
    let image = image();
    let compose = compose_file();
    let services: Vec<Service> = compose
        .services()
        .into_iter()
        .filter(builds_the_image)
        .collect();
    let names: Vec<&str> = services.iter().map(|service| service.name).collect();
    assert!(
        names.contains(&"api") && names.contains(&"worker"),
        "{names:?}"
    );
    let mut serving_services = 0;
    for service in &services {
        let context = format!("service {}", service.name);
        let entrypoint = service
            .strings("entrypoint")
            .unwrap_or_else(|| image.entrypoint.clone());
        let command = service
            .strings("command")
            .unwrap_or_else(|| image.cmd.clone());
        let argv: Vec<String> = entrypoint.into_iter().chain(command).collect();
        let own_env = service.environment();
        check_environment(&context, &argv, &own_env);
        let mut env = image.env.clone();
        env.extend(own_env.into_iter().filter(|(_, value)| value.is_some()));
        let cli = effective(&argv, &env);

        let ports = service.container_ports();
        let healthcheck = service.get("healthcheck");
        let disabled = healthcheck.is_some_and(|check| {
            check["disable"].as_bool() == Some(true)
                || service_check(service).is_some_and(|test| test == ["NONE"])
        });
        match serving(&cli) {
            Some(serve) => {
                serving_services += 1;
                for port in &ports {
                    assert_eq!(
                        *port,
                        serve.bind.port(),
                        "{context}: publishes {port}, serves on {}",
                        serve.bind
                    );
                }
                assert!(
                    ports.is_empty() || serve.bind.ip().is_unspecified(),
                    "{context}: listens on {}, which the published port cannot reach",
                    serve.bind
                );
                assert!(
                    serve
                        .mcp_allowed_hosts
                        .iter()
                        .any(|host| host == service.name || host == "*"),
                    "{context}: /mcp refuses its own service name: {:?}",
                    serve.mcp_allowed_hosts
                );
                assert!(!disabled, "{context}: serves, so its health check runs");
                let check = match service_check(service) {
                    Some(test) => {
                        assert_eq!(test[0], "CMD", "{context}: the image has no shell");
                        test[1..].to_vec()
                    }
                    None => image.healthcheck.clone(),
                };
                assert_eq!(check[0], image.binary, "{context}: checks with the binary");
                let url = health_url(&context, &check, &env);
                assert_asks_its_own(&context, &url, serve.bind);
            }
            None => {
                assert!(
                    ports.is_empty(),
                    "{context}: serves no API, publishes no port"
                );
                assert!(
                    service.get("container_name").is_none(),
                    "{context}: a fixed name stops --scale"
                );
                let Some(Command::Worker(worker)) = &cli.command else {
                    panic!("{context}: runs neither serve nor worker: {argv:?}");
                };
                assert!(
                    worker.metrics_bind.ip().is_unspecified(),
                    "{context}: metrics on {}, which Prometheus in another container cannot reach",
                    worker.metrics_bind
                );
                assert!(
                    !disabled,
                    "{context}: a worker serves /healthz beside its metrics, so its health check runs"
                );
                let test = service_check(service).unwrap_or_else(|| {
                    panic!("{context}: the image's check asks the API's port, which a worker does not serve")
                });
                assert_eq!(test[0], "CMD", "{context}: the image has no shell");
                assert_eq!(test[1], image.binary, "{context}: checks with the binary");
                let url = health_url(&context, &test[1..], &env);
                assert_asks_its_own(&context, &url, worker.metrics_bind);
            }
        }
        check_database(&compose, service, &env);
    }
    assert_eq!(serving_services, 1, "one service serves the API");
}

/// A service's own health check command (`test`), if it sets one.
fn service_check(service: &Service) -> Option<Vec<String>> {
    let test = service.get("healthcheck")?.get("test")?;
    let test: Vec<String> = test
        .as_sequence()
        .expect("healthcheck.test is a list")
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect();
    Some(test)
}

/// DATABASE_URL names a service of the file, with the user, password and
/// database it creates, and the service waits until that one is healthy.
fn check_database(
    compose: &ComposeFile,
    service: &Service,
    env: &BTreeMap<String, Option<String>>,
) {
    let context = format!("service {}", service.name);
    let url = env
        .get("DATABASE_URL")
        .cloned()
        .flatten()
        .unwrap_or_else(|| panic!("{context}: sets DATABASE_URL"));
    let config: tokio_postgres::Config = url
        .parse()
        .unwrap_or_else(|e| panic!("{context}: DATABASE_URL {url:?}: {e}"));
    let host = match config.get_hosts() {
        [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
        other => panic!("{context}: DATABASE_URL names one host, not {other:?}"),
    };
    let postgres = compose.service(&host);
    let creates = postgres.environment();
    let created = |name: &str| creates.get(name).cloned().flatten();
    assert_eq!(
        config.get_user(),
        created("POSTGRES_USER").as_deref(),
        "{context}: user"
    );
    assert_eq!(
        config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        created("POSTGRES_PASSWORD"),
        "{context}: password"
    );
    assert_eq!(
        config.get_dbname(),
        created("POSTGRES_DB").as_deref(),
        "{context}: database"
    );
    assert_eq!(config.get_ports(), [5432], "{context}: PostgreSQL's port");
    assert_eq!(
        service.depends_on().get(&host).map(String::as_str),
        Some("service_healthy"),
        "{context}: waits for {host} to be healthy"
    );

    let test = service_check(&postgres).expect("the database has a health check");
    let test: Vec<&str> = test.iter().map(String::as_str).collect();
    let user = created("POSTGRES_USER").unwrap_or_default();
    let database = created("POSTGRES_DB").unwrap_or_default();
    assert_eq!(
        test[..2],
        ["CMD", "pg_isready"],
        "{host}: checked with pg_isready"
    );
    assert!(
        test.windows(2).any(|pair| pair == ["-U", user.as_str()]),
        "{test:?}: -U {user}"
    );
    assert!(
        test.windows(2)
            .any(|pair| pair == ["-d", database.as_str()]),
        "{test:?}: -d {database}"
    );
    for volume in postgres.strings("volumes").unwrap_or_default() {
        let (name, _) = volume.split_once(':').expect("volume:path");
        assert!(
            compose.declares_volume(name),
            "{host}: volume {name} is declared"
        );
    }
}

#[tokio::test]
async fn the_health_checks_ask_a_path_the_server_serves() {
    let image = image();
    let compose = compose_file();
    let mut urls = vec![health_url("the image", &image.healthcheck, &image.env)];
    for service in compose
        .services()
        .iter()
        .filter(|service| builds_the_image(service))
    {
        if let Some(test) = service_check(service).filter(|test| test[0] == "CMD") {
            let context = format!("service {}", service.name);
            urls.push(health_url(&context, &test[1..], &image.env));
        }
    }
    let app = TestApp::new().await;
    let served = app.serve().await;
    let client = reqwest::Client::new();
    for url in urls {
        let asked = format!("http://{}{}", served.address, url.path());
        let response = client.get(&asked).send().await.expect("the server answers");
        assert_eq!(response.status(), 200, "{url}: {asked} is not served");
    }
}
