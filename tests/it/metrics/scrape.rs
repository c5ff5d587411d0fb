//! A small reader of the OpenMetrics text format, so tests look series up by
//! name and labels instead of matching substrings.

use std::collections::BTreeMap;

/// One sample: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Every sample of a scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: BTreeMap<Series, f64>,
}

impl Scrape {
    /// Parses a whole exposition; panics on a line it cannot read, and
    /// unless it ends with `# EOF` as OpenMetrics requires.
    pub fn parse(text: &str) -> Scrape {
        assert!(
            text.trim_end().ends_with("# EOF"),
            "no # EOF at the end:\n{text}"
        );
        let mut scrape = Scrape::default();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = parse_line(line).unwrap_or_else(|| panic!("bad line {line:?}"));
            let previous = scrape.samples.insert(series, value);
            assert!(previous.is_none(), "a sample appears twice: {line}");
        }
        scrape
    }

    /// The value of the sample `name` with exactly `labels`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let series = Series {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        self.samples.get(&series).copied()
    }

    /// Like [`Scrape::get`], 0 when the sample is absent (a counter never
    /// touched).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample named `name`.
    pub fn all(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(series, _)| series.name == name)
            .map(|(series, value)| (&series.labels, *value))
            .collect()
    }
}

fn parse_line(line: &str) -> Option<(Series, f64)> {
    let (name, rest) = match line.find('{') {
        Some(open) => (&line[..open], &line[open..]),
        None => line
            .split_once(' ')
            .map(|(name, _)| (name, &line[name.len()..]))?,
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest.to_owned();
    if let Some(inner) = rest.strip_prefix('{') {
        let chars: Vec<char> = inner.chars().collect();
        let mut i = 0;
        loop {
            match chars.get(i)? {
                '}' => {
                    i += 1;
                    break;
                }
                ',' => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let start = i;
            while *chars.get(i)? != '=' {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            i += 1;
            if *chars.get(i)? != '"' {
                return None;
            }
            i += 1;
            let mut value = String::new();
            loop {
                let c = *chars.get(i)?;
                i += 1;
                match c {
                    '\\' => {
                        let escaped = *chars.get(i)?;
                        i += 1;
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        }
        rest = chars[i..].iter().collect();
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some((
        Series {
            name: name.to_owned(),
            labels,
        },
        value,
    ))
}

#[test]
fn the_reader_reads_what_prometheus_would() {
    let scrape = Scrape::parse(
        "# HELP x_total X.\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uote, {x}\"} 3\nplain 2.5\nh_bucket{le=\"+Inf\"} 4\n# EOF\n",
    );
    assert_eq!(
        scrape.get("x_total", &[("a", "1"), ("b", "q\"uote, {x}")]),
        Some(3.0)
    );
    assert_eq!(scrape.get("plain", &[]), Some(2.5));
    assert_eq!(scrape.get("h_bucket", &[("le", "+Inf")]), Some(4.0));
    assert_eq!(scrape.get("x_total", &[("a", "1")]), None);
}
