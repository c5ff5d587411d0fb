//! docker/compose.yaml read as Compose reads it, with `${NAME:-default}`
//! resolved as in a shell that sets none of the names.

use std::collections::BTreeMap;

use serde_norway::Value;

/// The compose file.
pub struct ComposeFile {
    root: Value,
}

/// One service, by name.
pub struct Service<'a> {
    pub name: &'a str,
    value: &'a Value,
}

impl ComposeFile {
    pub fn parse(text: &str) -> ComposeFile {
        let root = serde_norway::from_str(text).expect("docker/compose.yaml is YAML");
        ComposeFile { root }
    }

    pub fn services(&self) -> Vec<Service<'_>> {
        self.root["services"]
            .as_mapping()
            .expect("services is a mapping")
            .iter()
            .map(|(name, value)| Service {
                name: name.as_str().expect("a service's name is a string"),
                value,
            })
            .collect()
    }

    pub fn service(&self, name: &str) -> Service<'_> {
        self.services()
            .into_iter()
            .find(|service| service.name == name)
            .unwrap_or_else(|| panic!("no service {name:?}"))
    }

    /// Whether the top-level `volumes` declares `name`.
    pub fn declares_volume(&self, name: &str) -> bool {
        self.root["volumes"]
            .as_mapping()
            .is_some_and(|volumes| volumes.contains_key(name))
    }
}

impl<'a> Service<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key)
    }

    /// A list of strings (a command, a test), interpolated.
    pub fn strings(&self, key: &str) -> Option<Vec<String>> {
        self.get(key).map(|value| strings(value, key))
    }

    /// `environment`, interpolated; `None` for a name passed on from the
    /// caller's environment (`NAME:` with no value), which may be unset.
    pub fn environment(&self) -> BTreeMap<String, Option<String>> {
        let Some(environment) = self.get("environment") else {
            return BTreeMap::new();
        };
        let mapping = environment
            .as_mapping()
            .unwrap_or_else(|| panic!("{}: write environment as a mapping", self.name));
        mapping
            .iter()
            .map(|(name, value)| {
                let name = name.as_str().expect("a variable's name is a string");
                let value = (!value.is_null()).then(|| scalar(value, name));
                (name.to_owned(), value)
            })
            .collect()
    }

    /// The container ports of `ports` (`"host:container"`, `"container"`,
    /// or the long form's `target`).
    pub fn container_ports(&self) -> Vec<u16> {
        let Some(ports) = self.get("ports") else {
            return Vec::new();
        };
        let ports = ports.as_sequence().expect("ports is a list");
        ports
            .iter()
            .map(|port| {
                let target = match port.get("target") {
                    Some(target) => scalar(target, "target"),
                    None => {
                        let text = scalar(port, "ports");
                        let last = text.rsplit(':').next().unwrap_or_default();
                        last.trim_end_matches("/tcp").to_owned()
                    }
                };
                target
                    .parse()
                    .unwrap_or_else(|_| panic!("{}: {target:?} is not a port", self.name))
            })
            .collect()
    }

    /// The services this one waits for, with their conditions.
    pub fn depends_on(&self) -> BTreeMap<String, String> {
        let Some(depends_on) = self.get("depends_on").and_then(Value::as_mapping) else {
            return BTreeMap::new();
        };
        depends_on
            .iter()
            .map(|(name, how)| {
                let name = name.as_str().expect("a service name").to_owned();
                let condition = how.get("condition").map(|c| scalar(c, "condition"));
                (name, condition.unwrap_or_default())
            })
            .collect()
    }
}

fn scalar(value: &Value, what: &str) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => panic!("{what}: {other:?} is not a single value"),
    };
    interpolate(&text)
}

fn strings(value: &Value, what: &str) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what}: write it as a list"))
        .iter()
        .map(|item| scalar(item, what))
        .collect()
}

/// `${NAME:-default}` as its default (the names are unset here); any other
/// form of `$` fails, rather than be read wrongly.
pub fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let inner_start = &rest[start..];
        let body = inner_start
            .strip_prefix("${")
            .and_then(|after| after.split_once('}'))
            .unwrap_or_else(|| panic!("{text:?}: only ${{NAME:-default}} is read here"));
        let (_, default) = body
            .0
            .split_once(":-")
            .unwrap_or_else(|| panic!("{text:?}: give ${{{}}} a default (:-)", body.0));
        out.push_str(default);
        rest = body.1;
    }
    out.push_str(rest);
    out
}
