//! The rules a task's fields must follow, checked before anything reaches the
//! database (which holds the same rules as CHECK constraints).

use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};

use crate::tasks::{NewTask, TaskChanges};

/// The longest prompt accepted, in characters.
pub const MAX_PROMPT_CHARS: usize = 100_000;
/// The longest model name accepted, in characters.
pub const MAX_MODEL_CHARS: usize = 100;
/// Allowed priorities: 1 is the lowest, 10 the highest.
pub const PRIORITY_RANGE: RangeInclusive<i32> = 1..=10;
/// The priority of a task created without one.
pub const DEFAULT_PRIORITY: i32 = 5;
/// Allowed attempt budgets.
pub const MAX_ATTEMPTS_RANGE: RangeInclusive<i32> = 1..=20;
/// The attempt budget of a task created without one.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;

/// Allowed sampling temperatures.
pub const TEMPERATURE_RANGE: RangeInclusive<f64> = 0.0..=2.0;
/// Allowed limits on the answer's length, in tokens.
pub const MAX_TOKENS_RANGE: RangeInclusive<i32> = 1..=1_000_000;
/// Allowed per-attempt timeouts, in seconds (up to a day).
pub const TIMEOUT_SECONDS_RANGE: RangeInclusive<i32> = 1..=86_400;

/// A field that broke a rule, and which rule: what a client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// The input field's name as the API spells it (`prompt`, `maxAttempts`, …).
    pub field: &'static str,
    /// What is wrong with it, in words a client can show.
    pub message: String,
}

impl InvalidField {
    /// A rule broken by `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidField {
            field,
            message: message.into(),
        }
    }
}

/// The fields of a task as a client sends them, before validation.
#[derive(Debug, Clone, Default)]
pub struct TaskFields {
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub priority: Option<i32>,
    pub max_attempts: Option<i32>,
    pub run_at: Option<DateTime<Utc>>,
    pub system: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    pub timeout_seconds: Option<i32>,
    /// Only on create: a key that makes a repeated create return the task
    /// the first one made.
    pub idempotency_key: Option<String>,
}

/// The longest idempotency key accepted, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

impl TaskFields {
    /// Validates the fields of a new task of `tenant`, filling in defaults.
    pub fn into_new_task(self, tenant: &str) -> Result<NewTask, InvalidField> {
        let run_at = self
            .run_at
            .map(|at| check_instant("runAt", at))
            .transpose()?;
        let prompt = self
            .prompt
            .ok_or_else(|| InvalidField::new("prompt", "is required"))?;
        let model = self
            .model
            .ok_or_else(|| InvalidField::new("model", "is required"))?;
        Ok(NewTask {
            prompt: validate_prompt(prompt)?,
            model: validate_model(model)?,
            priority: validate_priority(self.priority.unwrap_or(DEFAULT_PRIORITY))?,
            max_attempts: validate_max_attempts(self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS))?,
            run_at,
            system_prompt: self.system.map(validate_system).transpose()?,
            temperature: self.temperature.map(validate_temperature).transpose()?,
            max_tokens: self
                .max_tokens
                .map(|n| in_range("maxTokens", n, MAX_TOKENS_RANGE))
                .transpose()?,
            timeout_seconds: self
                .timeout_seconds
                .map(|n| in_range("timeoutSeconds", n, TIMEOUT_SECONDS_RANGE))
                .transpose()?,
            tenant: tenant.to_owned(),
            idempotency_key: self
                .idempotency_key
                .map(validate_idempotency_key)
                .transpose()?,
        })
    }

    /// Validates a change to a task; at least one field must be given.
    pub fn into_changes(self) -> Result<TaskChanges, InvalidField> {
        let changes = TaskChanges {
            prompt: self.prompt.map(validate_prompt).transpose()?,
            model: self.model.map(validate_model).transpose()?,
            priority: self.priority.map(validate_priority).transpose()?,
            max_attempts: self.max_attempts.map(validate_max_attempts).transpose()?,
        };
        if changes.is_empty() {
            return Err(InvalidField::new(
                "input",
                "give at least one of prompt, model, priority, maxAttempts",
            ));
        }
        Ok(changes)
    }
}

/// An idempotency key: 1 to 200 characters, any of them.
fn validate_idempotency_key(key: String) -> Result<String, InvalidField> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(InvalidField::new(
            "idempotencyKey",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {chars}"),
        ));
    }
    if key.contains('\0') {
        return Err(InvalidField::new(
            "idempotencyKey",
            "must not contain NUL characters",
        ));
    }
    Ok(key)
}

/// The longest tenant name, in characters.
pub const MAX_TENANT_CHARS: usize = 63;

/// Whether `name` is a tenant's name: 1 to 63 of `a-z 0-9 _ . -`, starting
/// with a letter or digit (the `tenants_name_format` constraint).
pub fn is_tenant_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && name.len() <= MAX_TENANT_CHARS
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

/// `name`, or a broken rule naming `field` when it is no tenant's name.
pub fn check_tenant_name(field: &'static str, name: String) -> Result<String, InvalidField> {
    if is_tenant_name(&name) {
        Ok(name)
    } else {
        Err(InvalidField::new(
            field,
            format!(
                "is not a tenant name (1 to {MAX_TENANT_CHARS} of a-z 0-9 _ . -, starting with a letter or digit)"
            ),
        ))
    }
}

/// Reads a task id as the API gives it out: a positive decimal integer.
pub fn parse_task_id(id: &str) -> Result<i64, InvalidField> {
    match id.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(InvalidField::new(
            "id",
            "is not a task id (a positive decimal integer)",
        )),
    }
}

/// The first instant the API accepts: 0001-01-01T00:00:00Z.
const FIRST_INSTANT_SECONDS: i64 = -62_135_596_800;
/// The last instant the API accepts: 9999-12-31T23:59:59.999999Z.
const LAST_INSTANT_SECONDS: i64 = 253_402_300_799;

/// Whether `instant` lies in the years RFC 3339 can write, 0001 to 9999.
///
/// Clients' date-time parsers accept years up to ±262,143, but PostgreSQL
/// stores none before 4713 BC: such an instant would fail in the database,
/// as an internal error, instead of being refused as the bad input it is.
pub fn is_writable_instant(instant: DateTime<Utc>) -> bool {
    (FIRST_INSTANT_SECONDS..=LAST_INSTANT_SECONDS).contains(&instant.timestamp())
}

/// `instant`, or a broken rule naming `field` when it is outside the years
/// 0001 to 9999.
pub fn check_instant(
    field: &'static str,
    instant: DateTime<Utc>,
) -> Result<DateTime<Utc>, InvalidField> {
    if is_writable_instant(instant) {
        Ok(instant)
    } else {
        Err(InvalidField::new(
            field,
            "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        ))
    }
}

fn validate_prompt(prompt: String) -> Result<String, InvalidField> {
    if prompt.trim().is_empty() {
        return Err(InvalidField::new("prompt", "must not be empty"));
    }
    validate_text("prompt", prompt)
}

fn validate_system(system: String) -> Result<String, InvalidField> {
    validate_text("system", system)
}

/// The rules every long text field follows: a length limit, and no NUL
/// (which PostgreSQL's text type cannot hold).
fn validate_text(field: &'static str, text: String) -> Result<String, InvalidField> {
    let chars = text.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(InvalidField::new(
            field,
            format!("is {chars} characters long; the limit is {MAX_PROMPT_CHARS}"),
        ));
    }
    if text.contains('\0') {
        return Err(InvalidField::new(field, "must not contain NUL characters"));
    }
    Ok(text)
}

fn validate_temperature(temperature: f64) -> Result<f64, InvalidField> {
    if !TEMPERATURE_RANGE.contains(&temperature) {
        return Err(InvalidField::new(
            "temperature",
            format!("must be between 0 and 2, got {temperature}"),
        ));
    }
    Ok(temperature)
}

fn in_range(
    field: &'static str,
    value: i32,
    range: RangeInclusive<i32>,
) -> Result<i32, InvalidField> {
    if !range.contains(&value) {
        return Err(InvalidField::new(
            field,
            format!(
                "must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(value)
}

fn validate_model(model: String) -> Result<String, InvalidField> {
    if model.is_empty() {
        return Err(InvalidField::new("model", "must not be empty"));
    }
    if model.chars().count() > MAX_MODEL_CHARS {
        return Err(InvalidField::new(
            "model",
            format!("must be at most {MAX_MODEL_CHARS} characters"),
        ));
    }
    if let Some(bad) = model.chars().find(|c| !is_model_char(*c)) {
        return Err(InvalidField::new(
            "model",
            format!("contains {bad:?}; use only letters, digits and . _ : / -"),
        ));
    }
    Ok(model)
}

fn is_model_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')
}

fn validate_priority(priority: i32) -> Result<i16, InvalidField> {
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(InvalidField::new(
            "priority",
            format!(
                "must be between {} and {}, got {priority}",
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            ),
        ));
    }
    i16::try_from(priority).map_err(|_| InvalidField::new("priority", "is out of range"))
}

fn validate_max_attempts(max_attempts: i32) -> Result<i32, InvalidField> {
    in_range("maxAttempts", max_attempts, MAX_ATTEMPTS_RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_parameters_are_checked() {
        let mut task = fields("p", "m");
        task.temperature = Some(f64::NAN);
        assert_eq!(
            task.clone().into_new_task("default").unwrap_err().field,
            "temperature"
        );
        task.temperature = Some(2.0);
        task.max_tokens = Some(0);
        assert_eq!(
            task.clone().into_new_task("default").unwrap_err().field,
            "maxTokens"
        );
        task.max_tokens = Some(512);
        task.timeout_seconds = Some(86_401);
        assert_eq!(
            task.clone().into_new_task("default").unwrap_err().field,
            "timeoutSeconds"
        );
        task.timeout_seconds = Some(30);
        assert!(task.into_new_task("default").is_ok());
    }

    fn fields(prompt: &str, model: &str) -> TaskFields {
        TaskFields {
            prompt: Some(prompt.into()),
            model: Some(model.into()),
            ..TaskFields::default()
        }
    }

    #[test]
    fn defaults_fill_priority_and_attempts() {
        let task = fields("hi", "gpt-4o").into_new_task("default").unwrap();
        assert_eq!((task.priority, task.max_attempts), (5, 3));
    }

    #[test]
    fn prompt_limit_counts_characters_not_bytes() {
        let at_limit = "é".repeat(MAX_PROMPT_CHARS);
        assert!(fields(&at_limit, "m").into_new_task("default").is_ok());
        let over = "a".repeat(MAX_PROMPT_CHARS + 1);
        assert_eq!(
            fields(&over, "m")
                .into_new_task("default")
                .unwrap_err()
                .field,
            "prompt"
        );
    }

    #[test]
    fn model_names_allow_provider_paths_and_tags() {
        for ok in ["gpt-4o", "llama3.1:8b", "meta-llama/Llama-3-70B", "a_b"] {
            assert!(fields("p", ok).into_new_task("default").is_ok(), "{ok}");
        }
        for bad in ["", "has space", "ünïcode", &"m".repeat(101)] {
            assert_eq!(
                fields("p", bad).into_new_task("default").unwrap_err().field,
                "model",
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_change_is_rejected() {
        assert_eq!(
            TaskFields::default().into_changes().unwrap_err().field,
            "input"
        );
    }
}
