//! The sampling settings, defined once: [`SamplingParams`] (with serde names equal to the
//! OpenAI / llama.cpp request fields) and [`SETTINGS`], one [`Setting`] per field with its
//! help text, valid range, parser and printer. Front ends read the table instead of listing the
//! settings again: the CLI builds its flags and `/set` / `/show` from it, an HTTP server
//! deserializes request bodies into [`SamplingParams`]. Both come from the one `settings!`
//! list below, so a new setting is added in one place.
//!
//! Defaults are SmolLM3's model card: temperature 0.6, top-p 0.95; every other filter is off.

use serde::{Deserialize, Serialize};

use crate::{GenError, Result};

/// One sampling setting, as the table [`SETTINGS`] describes it.
#[derive(Clone, Copy)]
pub struct Setting {
    /// The field's name: the serde / OpenAI / llama.cpp request name, and `/set NAME`.
    pub name: &'static str,
    /// Other names accepted for it (serde aliases, `/set` aliases such as Ollama's).
    pub aliases: &'static [&'static str],
    /// A one-letter flag, if the CLI gives it one.
    pub short: Option<char>,
    /// What the value looks like in help texts (`T`, `N`).
    pub value_name: &'static str,
    /// One line for `--help` (no final period, as clap writes doc comments).
    pub help: &'static str,
    /// The valid values in a few words (`in (0, 1]; 1 = off`), for `/set` help.
    pub range: &'static str,
    /// For optional settings, the word that means "unset" (`random` for the seed).
    pub unset: Option<&'static str>,
    show: fn(&SamplingParams) -> String,
    set: fn(&mut SamplingParams, &str) -> std::result::Result<(), String>,
    /// `None` when the value is in range, else what it must be.
    check: fn(&SamplingParams) -> Option<&'static str>,
}

impl Setting {
    /// The CLI flag's long name: `top_p` -> `top-p`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// Whether `key` names this setting (`-` and `_` alike, any alias).
    pub fn is_named(&self, key: &str) -> bool {
        let key = key.replace('-', "_");
        self.name == key || self.aliases.contains(&key.as_str())
    }

    /// The setting's value in `params`, as `/show` prints it (`random` for an unset seed).
    pub fn show(&self, params: &SamplingParams) -> String {
        (self.show)(params)
    }

    /// Parses `text` into the setting (the range is checked by [`SamplingParams::validate`]).
    /// The error says what was expected.
    pub fn set(&self, params: &mut SamplingParams, text: &str) -> std::result::Result<(), String> {
        (self.set)(params, text.trim())
    }

    /// The setting's default, as printed.
    pub fn default_text(&self) -> String {
        self.show(&SamplingParams::default())
    }
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting").field("name", &self.name).finish()
    }
}

/// How a setting's type is read from and printed to text.
trait SettingValue: Sized {
    fn parse(text: &str, unset: Option<&str>) -> std::result::Result<Self, String>;
    fn show(&self, unset: Option<&str>) -> String;
}

/// Plain numbers: parsed with `FromStr`, printed with `Display`.
macro_rules! number_setting {
    ($($ty:ty => $expected:literal),*) => {$(
        impl SettingValue for $ty {
            fn parse(text: &str, _: Option<&str>) -> std::result::Result<Self, String> {
                text.parse().map_err(|_| $expected.to_string())
            }
            fn show(&self, _: Option<&str>) -> String {
                self.to_string()
            }
        }
    )*};
}

number_setting!(
    f32 => "expected a number",
    usize => "expected a whole number >= 0",
    u64 => "expected a whole number >= 0"
);

impl<T: SettingValue> SettingValue for Option<T> {
    fn parse(text: &str, unset: Option<&str>) -> std::result::Result<Self, String> {
        if text == "none" || Some(text) == unset {
            return Ok(None);
        }
        T::parse(text, None).map(Some).map_err(|e| match unset {
            Some(word) => format!("{e} or {word:?}"),
            None => e,
        })
    }
    fn show(&self, unset: Option<&str>) -> String {
        match self {
            Some(v) => v.show(None),
            None => unset.unwrap_or("none").to_string(),
        }
    }
}

/// Writes [`SamplingParams`], its `Default` and [`SETTINGS`] from one list of settings.
macro_rules! settings {
    (@option) => { None };
    (@option $x:literal) => { Some($x) };
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $default:expr,
            $(aliases [$($alias:literal),*],)?
            $(short $short:literal,)?
            $(unset $unset:literal,)?
            value $value_name:literal,
            help $help:literal,
            range $range:literal,
            valid |$v:ident| $valid:expr, $requirement:literal;
    )*) => {
        /// Sampling settings and the answer's length limit. Defaults are SmolLM3's model
        /// card: temperature 0.6, top-p 0.95. Field names are the OpenAI / llama.cpp request
        /// fields; a partial JSON object fills in the defaults.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct SamplingParams {
            $(
                $(#[doc = $doc])*
                $($(#[serde(alias = $alias)])*)?
                pub $field: $ty,
            )*
        }

        impl Default for SamplingParams {
            fn default() -> Self {
                SamplingParams { $($field: $default,)* }
            }
        }

        /// Every sampling setting, in the order help texts list them.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                name: stringify!($field),
                aliases: &[$($($alias),*)?],
                short: settings!(@option $($short)?),
                value_name: $value_name,
                help: $help,
                range: $range,
                unset: settings!(@option $($unset)?),
                show: |p| SettingValue::show(&p.$field, settings!(@option $($unset)?)),
                set: |p, text| {
                    p.$field = SettingValue::parse(text, settings!(@option $($unset)?))?;
                    Ok(())
                },
                check: |p| {
                    let $v = &p.$field;
                    if $valid { None } else { Some($requirement) }
                },
            },
        )*];
    };
}

settings! {
    /// 0 means greedy (argmax).
    temperature: f32 = 0.6,
        value "T",
        help "Sampling temperature; 0 = greedy",
        range "0 = greedy",
        valid |v| v.is_finite() && *v >= 0.0, "must be a finite number >= 0 (0 = greedy)";
    /// Nucleus sampling; 1.0 = off.
    top_p: f32 = 0.95,
        value "P",
        help "Nucleus sampling: keep the most likely tokens up to this probability (1 = off)",
        range "in (0, 1]; 1 = off",
        valid |v| *v > 0.0 && *v <= 1.0, "must be in (0, 1] (1 = off)";
    /// Keep the k most likely tokens; 0 = off.
    top_k: usize = 0,
        value "K",
        help "Keep only the K most likely tokens (0 = off)",
        range "0 = off",
        valid |_v| true, "";
    /// Drop tokens whose probability is below `min_p` times the top one; 0 = off.
    min_p: f32 = 0.0,
        value "P",
        help "Drop tokens below this fraction of the top probability (0 = off)",
        range "in [0, 1]; 0 = off",
        valid |v| (0.0..=1.0).contains(v), "must be in [0, 1] (0 = off)";
    /// llama.cpp-style repetition penalty over the last `repeat_last_n` tokens; 1 = off.
    repeat_penalty: f32 = 1.0,
        value "R",
        help "Penalise repeating the recent tokens (see repeat_last_n; 1 = off)",
        range "> 0; 1 = off",
        valid |v| v.is_finite() && *v > 0.0, "must be a finite number > 0 (1 = off)";
    /// How many recent tokens the penalties look at.
    repeat_last_n: usize = 64,
        value "N",
        help "How many recent tokens the penalties look at",
        range "tokens the penalties look at",
        valid |_v| true, "";
    /// OpenAI presence penalty; 0 = off.
    presence_penalty: f32 = 0.0,
        value "X",
        help "OpenAI presence penalty (-2..2)",
        range "in [-2, 2]",
        valid |v| (-2.0..=2.0).contains(v), "must be in [-2, 2] (0 = off)";
    /// OpenAI frequency penalty; 0 = off.
    frequency_penalty: f32 = 0.0,
        value "X",
        help "OpenAI frequency penalty (-2..2)",
        range "in [-2, 2]",
        valid |v| (-2.0..=2.0).contains(v), "must be in [-2, 2] (0 = off)";
    /// RNG seed; `None` picks one (reported by [`crate::Sampler::seed`]).
    seed: Option<u64> = None,
        unset "random",
        value "N",
        help "Random seed (default: a new one for each answer, reported in the statistics)",
        range "random: a new seed for each answer",
        valid |_v| true, "";
    /// Most tokens to generate; `None` = until the model stops or the context is full.
    max_tokens: Option<usize> = None,
        aliases ["max_completion_tokens", "n_predict", "num_predict"],
        short 'n',
        unset "none",
        value "N",
        help "Most tokens per answer (default: until the model stops or the context is full)",
        range "none: until the model stops or the context is full",
        valid |v| *v != Some(0), "must be at least 1";
}

impl SamplingParams {
    /// The defaults with temperature 0: always the most likely token (after any penalties).
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks every setting's range; the error names the first bad setting and its value,
    /// e.g. `top_p must be in (0, 1] (1 = off), got 1.5`.
    pub fn validate(&self) -> Result<()> {
        match SETTINGS
            .iter()
            .find_map(|s| (s.check)(self).map(|need| (s, need)))
        {
            None => Ok(()),
            Some((s, need)) => Err(GenError::InvalidSampling(format!(
                "{} {need}, got {}",
                s.name,
                s.show(self)
            ))),
        }
    }

    /// The setting named `key` (or an alias), if there is one.
    pub fn setting(key: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.is_named(key))
    }

    pub(crate) fn has_penalties(&self) -> bool {
        self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_every_field_with_its_serde_name() {
        let json = serde_json::to_value(SamplingParams::default()).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(fields, names);
        assert_eq!(
            names,
            [
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "repeat_penalty",
                "repeat_last_n",
                "presence_penalty",
                "frequency_penalty",
                "seed",
                "max_tokens"
            ]
        );
    }

    #[test]
    fn set_and_show_go_through_the_table() {
        let mut p = SamplingParams::default();
        for (key, text, shown) in [
            ("temperature", "0.2", "0.2"),
            ("top-p", "0.5", "0.5"),
            ("top_k", "40", "40"),
            ("seed", "7", "7"),
            ("seed", "random", "random"),
            ("num_predict", "99", "99"),
            ("max_tokens", "none", "none"),
        ] {
            let s = SamplingParams::setting(key).unwrap();
            s.set(&mut p, text).unwrap();
            assert_eq!(s.show(&p), shown, "{key}");
        }
        assert_eq!(p.temperature, 0.2);
        assert_eq!(p.top_k, 40);
        let seed = SamplingParams::setting("seed").unwrap();
        assert_eq!(
            seed.set(&mut p, "x").unwrap_err(),
            "expected a whole number >= 0 or \"random\""
        );
        let t = SamplingParams::setting("temperature").unwrap();
        assert_eq!(t.set(&mut p, "hot").unwrap_err(), "expected a number");
        assert!(SamplingParams::setting("warmth").is_none());
    }

    #[test]
    fn openai_names_and_aliases_deserialize() {
        let p: SamplingParams =
            serde_json::from_str(r#"{"max_completion_tokens": 5, "seed": null, "top_p": 0.5}"#)
                .unwrap();
        assert_eq!(p.max_tokens, Some(5));
        assert_eq!(p.seed, None);
        assert_eq!(p.top_p, 0.5);
        assert_eq!(p.temperature, 0.6);
    }

    #[test]
    fn validate_names_the_setting_and_value() {
        let p = SamplingParams {
            max_tokens: Some(0),
            ..Default::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "invalid sampling settings: max_tokens must be at least 1, got 0"
        );
    }
}
