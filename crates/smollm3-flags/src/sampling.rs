//! The sampling flags (`--temperature`, `--top-p`, ..., `-n/--max-tokens`), built from
//! `smollm3_gen::SETTINGS`, the one table of sampling settings, so a setting added there gets
//! its flag, help line and default here without a change.

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use smollm3_gen::{SamplingParams, SETTINGS};

/// The parsed sampling flags (unset flags keep SmolLM3's defaults).
#[derive(Debug, Clone, Default)]
pub struct SamplingArgs(pub SamplingParams);

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        self.0.clone()
    }
}

impl Args for SamplingArgs {
    fn augment_args(cmd: Command) -> Command {
        SETTINGS.iter().fold(cmd, |cmd, setting| {
            let mut arg = Arg::new(setting.name)
                .long(setting.flag())
                .value_name(setting.value_name)
                .help(setting.help)
                // Parse with the table's parser: a bad value is a usage error naming the flag.
                .value_parser(move |text: &str| -> Result<String, String> {
                    setting
                        .set(&mut SamplingParams::default(), text)
                        .map(|()| text.to_string())
                });
            if setting.unset.is_none() {
                arg = arg.default_value(setting.default_text());
            }
            if let Some(short) = setting.short {
                arg = arg.short(short);
            }
            cmd.arg(arg)
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SamplingArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = SamplingArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            if let Some(text) = matches.get_one::<String>(setting.name) {
                setting
                    .set(&mut self.0, text)
                    .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        SamplingArgs::augment_args(Command::new("t").no_binary_name(true))
    }

    fn parse(args: &[&str]) -> Result<SamplingParams, clap::Error> {
        let matches = command().try_get_matches_from(args)?;
        SamplingArgs::from_arg_matches(&matches).map(|a| a.0)
    }

    #[test]
    fn every_setting_has_a_flag_with_its_default() {
        let cmd = command();
        for setting in SETTINGS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(setting.flag().as_str()))
                .unwrap_or_else(|| panic!("no --{} flag", setting.flag()));
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            match setting.unset {
                Some(_) => assert!(defaults.is_empty(), "{}", setting.name),
                None => assert_eq!(defaults, [setting.default_text()], "{}", setting.name),
            }
        }
        assert_eq!(parse(&[]).unwrap(), SamplingParams::default());
    }

    #[test]
    fn flags_set_the_params_and_bad_values_name_the_flag() {
        let p = parse(&[
            "--top-p",
            "0.5",
            "-n",
            "7",
            "--seed",
            "3",
            "--temperature",
            "0",
        ])
        .unwrap();
        assert_eq!(p.top_p, 0.5);
        assert_eq!(p.max_tokens, Some(7));
        assert_eq!(p.seed, Some(3));
        assert_eq!(p.temperature, 0.0);
        let e = parse(&["--top-k", "many"]).unwrap_err().to_string();
        assert!(
            e.contains("--top-k") && e.contains("expected a whole number"),
            "{e}"
        );
    }
}
