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
