//! docker/Dockerfile read as the engine reads it: instructions (continued
//! lines joined, comments dropped) grouped into stages.

use std::collections::BTreeMap;

/// One build stage: `FROM image AS name` and what follows it.
pub struct Stage {
    pub image: String,
    pub name: Option<String>,
    pub instructions: Vec<(String, String)>,
}

impl Stage {
    /// The arguments of every `keyword` instruction, in order.
    pub fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }

    /// The arguments of the one `keyword` instruction the stage must have.
    pub fn one(&self, keyword: &str) -> &str {
        match self.all(keyword).as_slice() {
            [one] => one,
            many => panic!(
                "stage {:?} has {} {keyword} instructions, not one",
                self.name,
                many.len()
            ),
        }
    }

    /// `ENV NAME=value …`, as a map (only the `=` form, unquoted: what the
    /// image uses; anything else fails here rather than being misread).
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for rest in self.all("ENV") {
            for pair in rest.split_whitespace() {
                let (name, value) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV {rest:?}: write NAME=value"));
                assert!(!value.contains(['"', '\'']), "ENV {rest:?}: no quotes");
                env.insert(name.to_owned(), value.to_owned());
            }
        }
        env
    }
}

/// The Dockerfile, stage by stage.
pub struct Dockerfile {
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn parse(text: &str) -> Dockerfile {
        let mut stages: Vec<Stage> = Vec::new();
        let mut pending = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
                continue;
            }
            if let Some(continued) = trimmed.strip_suffix('\\') {
                pending.push_str(continued);
                pending.push(' ');
                continue;
            }
            pending.push_str(trimmed);
            let instruction = std::mem::take(&mut pending);
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("an instruction without arguments: {instruction:?}"));
            let keyword = keyword.to_ascii_uppercase();
            let rest = rest.trim().to_owned();
            if keyword == "FROM" {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let (image, name) = match words.as_slice() {
                    [image] => (*image, None),
                    [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*image, Some((*name).to_owned()))
                    }
                    _ => panic!("FROM {rest:?}: expected `image` or `image AS name`"),
                };
                stages.push(Stage {
                    image: image.to_owned(),
                    name,
                    instructions: Vec::new(),
                });
            } else {
                let stage = stages
                    .last_mut()
                    .unwrap_or_else(|| panic!("{keyword} before any FROM"));
                stage.instructions.push((keyword, rest));
            }
        }
        assert!(pending.is_empty(), "the file ends inside a continued line");
        Dockerfile { stages }
    }

    /// The stage the image is: the last.
    pub fn runtime(&self) -> &Stage {
        self.stages.last().expect("a Dockerfile has a stage")
    }

    /// The working directory `stage` ends with: its own last WORKDIR, else
    /// the one of the stage it starts from.
    pub fn workdir(&self, stage: &Stage) -> String {
        if let Some(workdir) = stage.all("WORKDIR").last() {
            return (*workdir).to_owned();
        }
        let parent = self
            .stages
            .iter()
            .find(|parent| parent.name.as_deref() == Some(stage.image.as_str()))
            .unwrap_or_else(|| panic!("stage {:?} sets no WORKDIR", stage.name));
        self.workdir(parent)
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|stage| stage.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no stage named {name}"))
    }
}

/// An exec-form argument list (`["a", "b"]`); the shell form is refused, as
/// the runtime image has no shell.
pub fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|error| panic!("{rest:?} is not in exec form ([\"…\"]): {error}"))
}

/// `--flag=value` and `--flag value` options at the front of `rest`, and
/// what follows them.
pub fn leading_options(rest: &str) -> (BTreeMap<String, String>, &str) {
    let mut options = BTreeMap::new();
    let mut rest = rest.trim_start();
    while let Some(option) = rest.strip_prefix("--") {
        let end = option.find(char::is_whitespace).unwrap_or(option.len());
        let (name, value) = option[..end]
            .split_once('=')
            .unwrap_or_else(|| panic!("--{} without a value", &option[..end]));
        options.insert(name.to_owned(), value.to_owned());
        rest = option[end..].trim_start();
    }
    (options, rest)
}
