//! `--fail-on`: the regressions that make `l7tap diff` exit with status 3.
//!
//! Grammar (rules separated by commas, or the flag repeated):
//!
//! ```text
//! RULE   := METRIC '>' '+' NUMBER UNIT
//! METRIC := p50 | p90 | p99 | p99.9 | p999 | mean | errors
//! UNIT   := '%'                    relative change (every metric)
//!         | ns | us | µs | ms | s  absolute latency change (latency metrics)
//!         | pp                     percentage points (errors: the error rate)
//! ```
//!
//! A rule trips on a group whose candidate is worse than its baseline by more than the
//! threshold *and* significantly so (see `stats.rs`; `mean` has no test of its own: it trips
//! with a significant p50 or p90 change in the same direction).

/// What a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A latency quantile, in thousandths (500, 900, 990, 999).
    Quantile(u16),
    Mean,
    ErrorRate,
}

impl Metric {
    pub fn name(self) -> String {
        match self {
            Metric::Quantile(999) => "p99.9".into(),
            Metric::Quantile(q) => format!("p{}", q / 10),
            Metric::Mean => "mean".into(),
            Metric::ErrorRate => "errors".into(),
        }
    }
}

/// How much worse a metric may get.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// Relative, in percent of the baseline.
    Percent(f64),
    /// Absolute latency, ns.
    Nanos(f64),
    /// Absolute error rate, percentage points.
    Points(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    pub metric: Metric,
    pub threshold: Threshold,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let metric = self.metric.name();
        match self.threshold {
            Threshold::Percent(p) => write!(f, "{metric}>+{p}%"),
            Threshold::Nanos(ns) => write!(f, "{metric}>+{}us", ns / 1e3),
            Threshold::Points(p) => write!(f, "{metric}>+{p}pp"),
        }
    }
}

/// Parses one `--fail-on` value (one or more comma-separated rules).
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    text.split(',')
        .map(|rule| parse_rule(rule.trim()))
        .collect()
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    let usage = "a rule is METRIC>+CHANGE: METRIC one of p50, p90, p99, p99.9, mean, errors; \
                 CHANGE a number with %, a latency unit (ns, us, ms, s) or pp (errors); \
                 e.g. 'p99>+10%', 'p50>+2ms', 'errors>+1pp'";
    let (metric, change) = text
        .split_once('>')
        .ok_or_else(|| format!("--fail-on {text:?}: no '>'; {usage}"))?;
    let metric = match metric.trim() {
        "p50" => Metric::Quantile(500),
        "p90" => Metric::Quantile(900),
        "p99" => Metric::Quantile(990),
        "p99.9" | "p999" => Metric::Quantile(999),
        "mean" => Metric::Mean,
        "errors" | "error_rate" => Metric::ErrorRate,
        other => {
            return Err(format!(
                "--fail-on {text:?}: unknown metric {other:?}; {usage}"
            ))
        }
    };
    let change = change.trim();
    let Some(change) = change.strip_prefix('+') else {
        return Err(format!(
            "--fail-on {text:?}: the change must start with '+' (a regression is an increase); {usage}"
        ));
    };
    let split = change
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(change.len());
    let (number, unit) = change.split_at(split);
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("--fail-on {text:?}: {number:?} is not a number; {usage}"))?;
    let latency = !matches!(metric, Metric::ErrorRate);
    let threshold = match unit.trim() {
        "%" => Threshold::Percent(value),
        "pp" if !latency => Threshold::Points(value),
        "ns" if latency => Threshold::Nanos(value),
        "us" | "µs" if latency => Threshold::Nanos(value * 1e3),
        "ms" if latency => Threshold::Nanos(value * 1e6),
        "s" if latency => Threshold::Nanos(value * 1e9),
        "" => {
            return Err(format!(
                "--fail-on {text:?}: the change has no unit; {usage}"
            ))
        }
        other => {
            return Err(format!(
                "--fail-on {text:?}: unit {other:?} does not fit {}; {usage}",
                metric.name()
            ))
        }
    };
    Ok(Rule { metric, threshold })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        let rules = parse_rules("p99>+10%, p50>+2ms,errors>+1pp,p99.9>+500us,mean>+5%").unwrap();
        assert_eq!(
            rules,
            vec![
                Rule {
                    metric: Metric::Quantile(990),
                    threshold: Threshold::Percent(10.0)
                },
                Rule {
                    metric: Metric::Quantile(500),
                    threshold: Threshold::Nanos(2e6)
                },
                Rule {
                    metric: Metric::ErrorRate,
                    threshold: Threshold::Points(1.0)
                },
                Rule {
                    metric: Metric::Quantile(999),
                    threshold: Threshold::Nanos(5e5)
                },
                Rule {
                    metric: Metric::Mean,
                    threshold: Threshold::Percent(5.0)
                },
            ]
        );
        assert_eq!(rules[0].to_string(), "p99>+10%");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, says) in [
            ("p99", "no '>'"),
            ("p95>+10%", "unknown metric"),
            ("p99>10%", "must start with '+'"),
            ("p99>+ten%", "not a number"),
            ("p99>+10", "no unit"),
            ("p99>+1pp", "does not fit p99"),
            ("errors>+2ms", "does not fit errors"),
        ] {
            let error = parse_rules(rule).unwrap_err();
            assert!(error.contains(says), "{rule}: {error}");
        }
    }
}
