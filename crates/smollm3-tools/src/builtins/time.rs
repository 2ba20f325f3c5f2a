//! The `get_current_time` tool: the current date and time in a time zone.
//!
//! Time zones come from the IANA database bundled into the binary by `jiff` (its
//! `tzdb-bundle-always` feature), so the tool gives the same answers on every machine,
//! with or without `/usr/share/zoneinfo`.

use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::{Tool, ToolDefinition};

/// Reports the current date and time. The clock is the system clock, or a fixed instant
/// ([`CurrentTime::at`]) for reproducible answers and tests.
pub struct CurrentTime {
    definition: ToolDefinition,
    fixed: Option<Timestamp>,
}

impl Default for CurrentTime {
    fn default() -> Self {
        Self::new()
    }
}

impl CurrentTime {
    /// Reads the system clock on every call.
    pub fn new() -> Self {
        Self::with_clock(None)
    }

    /// Always reports `instant`.
    pub fn at(instant: Timestamp) -> Self {
        Self::with_clock(Some(instant))
    }

    /// Always reports the instant `unix_seconds` after 1970-01-01T00:00:00Z; `None` when
    /// that is outside the range `jiff` supports.
    pub fn at_unix_seconds(unix_seconds: i64) -> Option<Self> {
        Timestamp::from_second(unix_seconds).ok().map(Self::at)
    }

    fn with_clock(fixed: Option<Timestamp>) -> Self {
        CurrentTime {
            definition: ToolDefinition::new(
                "get_current_time",
                "Get the current date, time and weekday. Use it whenever the answer depends on \
                 today's date or the time of day, which you cannot know otherwise. Returns the \
                 date, the time (24-hour), the weekday, the UTC offset and an RFC 3339 timestamp \
                 for the requested time zone.",
                json!({
                    "type": "object",
                    "properties": {
                        "timezone": {
                            "type": "string",
                            "description": "An IANA time zone name such as \"Europe/Copenhagen\", \"America/New_York\" or \"Asia/Tokyo\". Defaults to \"UTC\"."
                        }
                    },
                    "additionalProperties": false
                }),
            ),
            fixed,
        }
    }

    /// The answer for `timezone` (an IANA name) at the tool's clock.
    pub fn report(&self, timezone: &str) -> Result<Value, String> {
        let now = self.fixed.unwrap_or_else(Timestamp::now);
        let tz = lookup(timezone)?;
        let zoned = now.to_zoned_datetime(tz);
        let fmt = |f: &str| zoned.strftime(f).to_string();
        Ok(json!({
            "timezone": timezone,
            "datetime": fmt("%Y-%m-%dT%H:%M:%S%:z"),
            "date": fmt("%Y-%m-%d"),
            "time": fmt("%H:%M:%S"),
            "weekday": fmt("%A"),
            "utc_offset": fmt("%:z"),
        }))
    }
}

fn lookup(name: &str) -> Result<TimeZone, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(
            "the time zone name is empty (use an IANA name such as \"Europe/Copenhagen\", \
                    or \"UTC\")"
                .into(),
        );
    }
    TimeZoneDatabase::bundled().get(name).map_err(|_| {
        format!(
            "unknown time zone {name:?} (use an IANA name such as \"Europe/Copenhagen\", \
             \"America/New_York\" or \"UTC\")"
        )
    })
}

impl Tool for CurrentTime {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn call(&self, arguments: &Map<String, Value>) -> Result<Value, String> {
        let timezone = match arguments.get("timezone") {
            None | Some(Value::Null) => "UTC",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(format!("timezone must be a string, got {other}")),
        };
        self.report(timezone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_in_utc() {
        // 2026-11-23T19:51:07Z
        let tool = CurrentTime::at_unix_seconds(1_795_463_467).unwrap();
        let out = tool.call(&Map::new()).unwrap();
        assert_eq!(out["timezone"], "UTC");
        assert_eq!(out["datetime"], "2026-11-23T19:51:07+00:00");
        assert_eq!(out["weekday"], "Monday");
    }

    #[test]
    fn unknown_zone() {
        let err = CurrentTime::new().report("Mars/Olympus_Mons").unwrap_err();
        assert!(
            err.contains("unknown time zone \"Mars/Olympus_Mons\""),
            "{err}"
        );
    }
}
