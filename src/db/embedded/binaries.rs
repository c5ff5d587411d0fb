//! Finding PostgreSQL's server programs for the private cluster. Only what is
//! installed is used: nothing is downloaded, at run time or build time.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// The programs the cluster needs, all in one directory.
const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Directories of versioned installs, `<dir>/<prefix><version>/bin`: Debian
/// and Ubuntu, the PostgreSQL project's RPMs, Homebrew on Apple silicon and
/// on Intel.
const INSTALL_ROOTS: [(&str, &str); 4] = [
    ("/usr/lib/postgresql", ""),
    ("/usr", "pgsql-"),
    ("/opt/homebrew/opt", "postgresql@"),
    ("/usr/local/opt", "postgresql@"),
];

/// What to tell someone who has no PostgreSQL programs.
const INSTALL_ADVICE: &str = "Install PostgreSQL (Debian, Ubuntu: `apt install postgresql`; \
     Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql@17`), \
     or set DATABASE_URL to a server you have";

/// Where to look, in order of preference.
pub(super) struct Sources {
    /// What `pg_config --bindir` says, if there is a `pg_config`.
    pub pg_config_bindir: Option<PathBuf>,
    /// The directories of PATH.
    pub path: Vec<PathBuf>,
    /// Directories of versioned installs and the prefix of their entries.
    pub roots: Vec<(PathBuf, String)>,
}

impl Sources {
    /// This machine's: its `pg_config`, its PATH, the usual install paths.
    pub fn of_this_machine() -> Sources {
        let pg_config_bindir = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
        let path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        let roots = INSTALL_ROOTS
            .iter()
            .map(|(dir, prefix)| (PathBuf::from(dir), (*prefix).to_owned()))
            .collect();
        Sources {
            pg_config_bindir,
            path,
            roots,
        }
    }

    /// Every directory holding all the programs, in order of preference:
    /// `pg_config --bindir`, then PATH, then each install root's versions,
    /// newest first. A directory reached twice counts once.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = Vec::new();
        let mut consider = |dir: PathBuf| {
            if has_programs(&dir) {
                let dir = dir.canonicalize().unwrap_or(dir);
                if !found.contains(&dir) {
                    found.push(dir);
                }
            }
        };
        if let Some(dir) = &self.pg_config_bindir {
            consider(dir.clone());
        }
        for dir in &self.path {
            consider(dir.clone());
        }
        for (root, prefix) in &self.roots {
            for dir in versioned_installs(root, prefix) {
                consider(dir);
            }
        }
        found
    }
}

/// The `bin` directories under `root` named `<prefix><version>`, newest first.
fn versioned_installs(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix(prefix)?;
            Some((major_of(version)?, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// The major version at the start of `text` (`15`, `15.4`, `9.6`: 15, 15, 9).
fn major_of(text: &str) -> Option<u32> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let rest = &text[digits.len()..];
    (rest.is_empty() || rest.starts_with('.'))
        .then(|| digits.parse().ok())
        .flatten()
}

fn has_programs(dir: &Path) -> bool {
    PROGRAMS.iter().all(|program| dir.join(program).is_file())
}

/// The major version of the programs in `bindir`, from `postgres --version`
/// ("postgres (PostgreSQL) 15.4 (Debian 15.4-1)").
pub(super) fn version_of(bindir: &Path) -> Option<u32> {
    let output = std::process::Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (_, version) = text.split_once(") ")?;
    major_of(version.trim())
}

/// The directory to run the cluster from: `configured` if given (it must hold
/// the programs), else the first candidate or, for a cluster made earlier by
/// major version `made_by`, the first candidate of that version (a cluster's
/// files are only readable by the major version that made them).
pub(super) fn choose(
    configured: Option<&Path>,
    candidates: &[PathBuf],
    made_by: Option<u32>,
    version_of: impl Fn(&Path) -> Option<u32>,
) -> anyhow::Result<PathBuf> {
    if let Some(dir) = configured {
        if !has_programs(dir) {
            bail!(
                "--postgres-bin-dir {} does not hold PostgreSQL's server programs ({}). \
                 Point it at the directory that does (`pg_config --bindir` names it). \
                 {INSTALL_ADVICE}.",
                dir.display(),
                PROGRAMS.join(", ")
            );
        }
        return Ok(dir.to_owned());
    }
    let Some(first) = candidates.first() else {
        bail!(
            "PostgreSQL's server programs ({}) are not installed here (looked at \
             `pg_config --bindir`, PATH, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin and \
             Homebrew's). {INSTALL_ADVICE}.",
            PROGRAMS.join(", ")
        );
    };
    let Some(wanted) = made_by else {
        return Ok(first.clone());
    };
    if let Some(dir) = candidates
        .iter()
        .find(|dir| version_of(dir) == Some(wanted))
    {
        return Ok(dir.clone());
    }
    bail!(
        "the cluster was made by PostgreSQL {wanted}, whose server programs are not installed \
         here (found: {}). Install PostgreSQL {wanted}, point --postgres-bin-dir at its \
         programs, or use another --data-dir.",
        candidates
            .iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A directory of the test's own, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "taskrunner-binaries-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir.canonicalize().unwrap())
        }

        /// `dir` (under the scratch directory) with the given programs in it.
        fn bindir(&self, dir: &str, programs: &[&str]) -> PathBuf {
            let dir = self.0.join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            for program in programs {
                let path = dir.join(program);
                std::fs::write(&path, "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn pg_config_comes_first_then_path_then_install_roots_newest_first() {
        let scratch = Scratch::new();
        let from_pg_config = scratch.bindir("pgconfig/bin", &PROGRAMS);
        let on_path = scratch.bindir("path/bin", &PROGRAMS);
        let client_only = scratch.bindir("usr/bin", &["pg_config", "psql"]);
        let v13 = scratch.bindir("lib/postgresql/13/bin", &PROGRAMS);
        let v16 = scratch.bindir("lib/postgresql/16/bin", &PROGRAMS);
        scratch.bindir("lib/postgresql/17/bin", &["initdb"]); // half an install
        scratch.bindir("lib/postgresql/common/bin", &PROGRAMS); // not a version
        let brew = scratch.bindir("opt/postgresql@15/bin", &PROGRAMS);
        let sources = Sources {
            pg_config_bindir: Some(from_pg_config.clone()),
            path: vec![client_only, on_path.clone(), v13.clone()],
            roots: vec![
                (scratch.0.join("lib/postgresql"), String::new()),
                (scratch.0.join("opt"), "postgresql@".into()),
                (scratch.0.join("missing"), String::new()),
            ],
        };
        assert_eq!(
            sources.candidates(),
            [from_pg_config, on_path, v13, v16, brew]
        );
    }

    #[test]
    fn nothing_installed_says_how_to_install_or_set_database_url() {
        let scratch = Scratch::new();
        let sources = Sources {
            pg_config_bindir: None,
            path: vec![scratch.bindir("bin", &["psql"])],
            roots: vec![(scratch.0.join("lib/postgresql"), String::new())],
        };
        let candidates = sources.candidates();
        assert!(candidates.is_empty());
        let error = choose(None, &candidates, None, |_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not installed"), "{error}");
        assert!(error.contains("apt install postgresql"), "{error}");
        assert!(error.contains("brew install"), "{error}");
        assert!(error.contains("DATABASE_URL"), "{error}");
    }

    #[test]
    fn an_existing_cluster_picks_the_programs_of_its_version() {
        let scratch = Scratch::new();
        let v17 = scratch.bindir("17/bin", &PROGRAMS);
        let v15 = scratch.bindir("15/bin", &PROGRAMS);
        let candidates = [v17.clone(), v15.clone()];
        let version = |dir: &Path| major_of(&dir.parent()?.file_name()?.to_string_lossy());
        assert_eq!(choose(None, &candidates, None, version).unwrap(), v17);
        assert_eq!(choose(None, &candidates, Some(15), version).unwrap(), v15);
        let error = choose(None, &candidates, Some(14), version)
            .unwrap_err()
            .to_string();
        assert!(error.contains("made by PostgreSQL 14"), "{error}");
    }

    #[test]
    fn a_configured_directory_must_hold_the_programs() {
        let scratch = Scratch::new();
        let empty = scratch.bindir("empty", &[]);
        let error = choose(Some(&empty), &[], None, |_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--postgres-bin-dir"), "{error}");
        assert!(error.contains("DATABASE_URL"), "{error}");
        let full = scratch.bindir("full", &PROGRAMS);
        assert_eq!(choose(Some(&full), &[], None, |_| None).unwrap(), full);
    }

    #[test]
    fn versions_read_from_names_and_version_lines() {
        assert_eq!(major_of("15"), Some(15));
        assert_eq!(major_of("15.4 (Debian 15.4-1)"), Some(15));
        assert_eq!(major_of("9.6"), Some(9));
        assert_eq!(major_of("common"), None);
        assert_eq!(major_of("16beta1"), None);
    }
}
