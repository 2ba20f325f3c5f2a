//! The clock behind the template's `strftime_now`, injectable so tests and prompt caches can
//! fix the date.

/// A calendar date and time (proleptic Gregorian, no time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

impl DateTime {
    /// A date at midnight; `None` if it does not exist.
    pub fn date(year: i32, month: u32, day: u32) -> Option<Self> {
        let dim = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if is_leap(year) => 29,
            2 => 28,
            _ => return None,
        };
        (1..=dim).contains(&day).then_some(DateTime {
            year,
            month,
            day,
            hour: 0,
            minute: 0,
            second: 0,
        })
    }

    /// From seconds since the Unix epoch (UTC).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86400);
        let rem = secs.rem_euclid(86400);
        let z = days + 719468;
        let era = z.div_euclid(146097);
        let doe = z - era * 146097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// Parses `"04 September 2026"` (the template's `%d %B %Y`) or `"2026-09-04"`.
    pub fn parse_date(s: &str) -> Option<Self> {
        let s = s.trim();
        if let [y, m, d] = s.split('-').collect::<Vec<_>>()[..] {
            return Self::date(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
        }
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [d, m, y] = parts[..] else { return None };
        let month = MONTHS
            .iter()
            .position(|name| name.eq_ignore_ascii_case(m) || name[..3].eq_ignore_ascii_case(m))?;
        Self::date(y.parse().ok()?, month as u32 + 1, d.parse().ok()?)
    }

    fn weekday(&self) -> usize {
        // 1970-01-01 was a Thursday (index 3 from Monday).
        (days_from_civil(self.year, self.month, self.day) + 3).rem_euclid(7) as usize
    }

    /// Python `strftime` for the C-locale directives `%d %m %Y %y %B %b %A %a %H %I %M %S %p
    /// %j %e %%`; any other directive is copied through unchanged.
    pub fn strftime(&self, format: &str) -> String {
        let mut out = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(d) = chars.next() else {
                out.push('%');
                break;
            };
            let month = MONTHS[(self.month as usize - 1) % 12];
            let day = DAYS[self.weekday()];
            match d {
                'd' => out.push_str(&format!("{:02}", self.day)),
                'e' => out.push_str(&format!("{:>2}", self.day)),
                'm' => out.push_str(&format!("{:02}", self.month)),
                'Y' => out.push_str(&self.year.to_string()),
                'y' => out.push_str(&format!("{:02}", self.year.rem_euclid(100))),
                'B' => out.push_str(month),
                'b' | 'h' => out.push_str(&month[..3]),
                'A' => out.push_str(day),
                'a' => out.push_str(&day[..3]),
                'H' => out.push_str(&format!("{:02}", self.hour)),
                'I' => out.push_str(&format!("{:02}", (self.hour + 11) % 12 + 1)),
                'M' => out.push_str(&format!("{:02}", self.minute)),
                'S' => out.push_str(&format!("{:02}", self.second)),
                'p' => out.push_str(if self.hour < 12 { "AM" } else { "PM" }),
                'j' => {
                    let doy = days_from_civil(self.year, self.month, self.day)
                        - days_from_civil(self.year, 1, 1)
                        + 1;
                    out.push_str(&format!("{doy:03}"));
                }
                '%' => out.push('%'),
                other => {
                    out.push('%');
                    out.push(other);
                }
            }
        }
        out
    }
}

/// Where `strftime_now` gets the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime;
}

/// The system clock, in UTC.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        DateTime::from_unix(secs)
    }
}

/// A clock stopped at one moment.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime);

impl Clock for FixedClock {
    fn now(&self) -> DateTime {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python() {
        let d = DateTime::parse_date("04 September 2026").unwrap();
        assert_eq!(d.strftime("%d %B %Y"), "04 September 2026");
        assert_eq!(
            d.strftime("%A %a %b %m/%d/%y %j %%"),
            "Friday Fri Sep 09/04/26 247 %"
        );
        assert_eq!(
            DateTime::from_unix(0).strftime("%Y-%m-%d %H:%M:%S %A"),
            "1970-01-01 00:00:00 Thursday"
        );
        assert_eq!(
            DateTime::from_unix(1_709_210_096).strftime("%Y-%m-%d %H:%M:%S"),
            "2024-02-29 12:34:56"
        );
        assert!(DateTime::parse_date("31 February 2026").is_none());
        assert_eq!(DateTime::parse_date("2026-09-04"), Some(d));
    }
}
