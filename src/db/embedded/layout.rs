//! Where the private cluster keeps its things under the data directory, where
//! its socket goes, and how a connection URL names that socket.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::bail;

/// The port in the socket's name (`.s.PGSQL.5432`). The cluster listens on no
/// TCP port; its socket directory is its own, so the number never clashes.
pub(super) const PORT: u16 = 5432;

/// The longest socket path this code lets PostgreSQL make: `sun_path` holds
/// 108 bytes on Linux and 104 on macOS, the terminating NUL included.
const MAX_SOCKET_PATH: usize = 103;

/// The files of one data directory.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The data directory, absolute.
    pub root: PathBuf,
}

impl Layout {
    /// The cluster's own directory (PGDATA).
    pub fn pgdata(&self) -> PathBuf {
        self.root.join("postgres")
    }

    /// Where `initdb` makes a new cluster, renamed to [`Layout::pgdata`] only
    /// once it is complete, so a killed `initdb` never leaves a half-made
    /// cluster where one is expected.
    pub fn staging(&self) -> PathBuf {
        self.root.join("postgres.initdb")
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.root.join("postgresql.log")
    }

    /// Held exclusively while a process starts, joins, leaves or stops the cluster.
    pub fn cluster_lock(&self) -> PathBuf {
        self.root.join("cluster.lock")
    }

    /// One locked file per process using the cluster.
    pub fn users(&self) -> PathBuf {
        self.root.join("users")
    }

    /// The directory for the server's socket: `run` in the data directory,
    /// unless the socket's path would be too long there (or awkward to write
    /// into postgresql.conf), then a directory under `temp` named after the
    /// data directory (and, if even that is too long, under /tmp). A second
    /// process finds it in postmaster.pid.
    pub fn socket_dir(&self, temp: &Path) -> PathBuf {
        let name = format!(
            "taskrunner-{:016x}",
            fnv1a(self.root.as_os_str().as_bytes())
        );
        [
            self.root.join("run"),
            temp.join(&name),
            Path::new("/tmp").join(&name),
        ]
        .into_iter()
        .find(|dir| fits_socket(dir) && is_plain(dir))
        .unwrap_or_else(|| Path::new("/tmp").join(name))
    }
}

/// Whether `<dir>/.s.PGSQL.<port>` is short enough for a Unix socket.
fn fits_socket(dir: &Path) -> bool {
    dir.as_os_str().len() + format!("/.s.PGSQL.{PORT}").len() <= MAX_SOCKET_PATH
}

/// Whether `path` can be written between single quotes in postgresql.conf
/// and as one entry of `unix_socket_directories` without escaping.
fn is_plain(path: &Path) -> bool {
    path.to_str().is_some_and(|text| {
        !text
            .chars()
            .any(|c| c.is_control() || matches!(c, '\'' | '"' | ',' | '\\'))
            && text.trim() == text
    })
}

/// Refuses a data directory whose path `pg_ctl` cannot hand to its shell:
/// it quotes paths with double quotes, inside which these characters act.
pub(super) fn check_data_dir(root: &Path) -> anyhow::Result<()> {
    let text = root.to_string_lossy();
    if text
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '$' | '`' | '\\'))
    {
        bail!(
            "the data directory {} has a character in its path (\", $, ` or \\) that \
             PostgreSQL's pg_ctl cannot pass on; choose another --data-dir",
            root.display()
        );
    }
    Ok(())
}

/// The URL of database `database` as user `postgres` over the socket in `dir`.
pub(super) fn socket_url(dir: &Path, port: u16, database: &str) -> String {
    format!(
        "postgres://postgres@{}:{port}/{}",
        percent_encode(&dir.to_string_lossy()),
        percent_encode(database)
    )
}

/// `text` with everything but URL-safe characters as `%XX`.
pub(super) fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Where a running server says it listens, from its postmaster.pid: the
/// port (fourth line) and the first socket directory (fifth line).
pub(super) fn listening_at(postmaster_pid: &str) -> Option<(PathBuf, u16)> {
    let mut lines = postmaster_pid.lines().skip(3);
    let port = lines.next()?.trim().parse().ok()?;
    let dir = lines.next()?.trim();
    (!dir.is_empty()).then(|| (PathBuf::from(dir), port))
}

/// FNV-1a: a hash that stays the same across builds and machines, so that
/// every process names a data directory's socket directory alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(root: &str) -> Layout {
        Layout {
            root: PathBuf::from(root),
        }
    }

    #[test]
    fn a_short_data_directory_keeps_its_socket() {
        let layout = layout("/home/ana/project/.taskrunner");
        assert_eq!(
            layout.socket_dir(Path::new("/tmp")),
            Path::new("/home/ana/project/.taskrunner/run")
        );
    }

    #[test]
    fn a_long_data_directory_puts_its_socket_in_a_short_named_directory() {
        let deep = format!("/home/ana/{}/.taskrunner", "nested/".repeat(14));
        let layout = layout(&deep);
        let dir = layout.socket_dir(Path::new("/run/user/1000"));
        assert!(
            dir.to_string_lossy()
                .starts_with("/run/user/1000/taskrunner-"),
            "{dir:?}"
        );
        assert!(fits_socket(&dir));
        // Every process computes the same directory for the same data directory,
        // and another for another.
        assert_eq!(dir, layout.socket_dir(Path::new("/run/user/1000")));
        let other = Layout {
            root: PathBuf::from(format!("{deep}2")),
        };
        assert_ne!(dir, other.socket_dir(Path::new("/run/user/1000")));
        // A temporary directory too long itself falls back to /tmp.
        let long_temp = PathBuf::from(format!("/var/{}", "t".repeat(90)));
        assert!(
            layout
                .socket_dir(&long_temp)
                .to_string_lossy()
                .starts_with("/tmp/taskrunner-")
        );
    }

    #[test]
    fn the_limit_counts_the_socket_file_name() {
        // `/.s.PGSQL.5432` is 14 bytes: a directory of 89 fits, 90 does not.
        let fits = PathBuf::from(format!("/{}", "a".repeat(88)));
        assert!(fits_socket(&fits));
        let too_long = PathBuf::from(format!("/{}", "a".repeat(89)));
        assert!(!fits_socket(&too_long));
    }

    #[test]
    fn awkward_characters_move_the_socket_and_some_refuse_the_directory() {
        let layout = layout("/home/ana/o'brien,x/.taskrunner");
        assert!(
            layout
                .socket_dir(Path::new("/tmp"))
                .to_string_lossy()
                .starts_with("/tmp/taskrunner-")
        );
        assert!(check_data_dir(&layout.root).is_ok());
        let error = check_data_dir(Path::new("/home/ana/$HOME")).unwrap_err();
        assert!(error.to_string().contains("--data-dir"), "{error}");
    }

    #[test]
    fn socket_urls_encode_the_directory() {
        let url = socket_url(Path::new("/tmp/my dir:1"), 5432, "taskrunner");
        assert_eq!(
            url,
            "postgres://postgres@%2Ftmp%2Fmy%20dir%3A1:5432/taskrunner"
        );
        let config: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(
            config.get_hosts(),
            [tokio_postgres::config::Host::Unix(PathBuf::from(
                "/tmp/my dir:1"
            ))]
        );
        assert_eq!(config.get_ports(), [5432]);
    }

    #[test]
    fn postmaster_pid_names_port_and_socket() {
        let pid_file = "4242\n/data/postgres\n1700000000\n5432\n/data/run\n\n  1234567\nready   \n";
        assert_eq!(
            listening_at(pid_file),
            Some((PathBuf::from("/data/run"), 5432))
        );
        assert_eq!(listening_at("4242\n/data\n"), None);
    }
}
