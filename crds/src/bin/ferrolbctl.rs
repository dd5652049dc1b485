//! `ferrolbctl`: offline tools for FerroLB configuration.
//!
//! * `validate FILE...`: exit 0 when the combined configuration is valid, 1 when it is invalid
//!   (one line per error on stderr), 2 when a file cannot be read or is not YAML. Objects that
//!   are not FerroLB or MetalLB configuration (a Deployment, a Service, ...) are listed as
//!   skipped.
//! * `migrate FILE...`: MetalLB CRs and the legacy ConfigMap → FerroLB CRs on stdout; every
//!   other object is passed through unchanged (first, in input order), so a whole manifest
//!   converts in one go.
//!
//! Both read `-` as stdin, and a Helm `values.yaml` of MetalLB's chart ≤ 0.12 as the legacy
//! configuration under its `configInline:` key.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrolb_crds::config::{
    ClusterResources, Config, InputDocument, OtherObject, ParsedInput, parse_documents,
};
use ferrolb_crds::migrate;

#[derive(Parser)]
#[command(
    name = "ferrolbctl",
    version,
    about = "Validate and migrate FerroLB / MetalLB configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate FerroLB CRs and/or a legacy MetalLB ConfigMap as one configuration.
    Validate {
        /// The files are the whole configuration: a name that refers to an object not in them
        /// (a pool, a BGPPeer, a Community alias, a BFDProfile, a Secret) is an error, not a
        /// warning.
        #[arg(long)]
        complete: bool,
        /// YAML files (multi-document); `-` reads stdin.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Convert MetalLB CRs (metallb.io/v1beta1, v1beta2) and the legacy ConfigMap to FerroLB CRs.
    Migrate {
        /// YAML files (multi-document); `-` reads stdin.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

const EXIT_INVALID: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;

/// Reads and splits every file; `Err` carries the exit-2 message.
fn read_all(files: &[String]) -> Result<ParsedInput, String> {
    let mut all = ParsedInput::default();
    for file in files {
        // Messages name stdin `stdin`, not `-`.
        let (text, name) = if file == "-" {
            let text =
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?;
            (text, "stdin")
        } else {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            (text, file.as_str())
        };
        let parsed = parse_documents(&text, name)?;
        all.documents.extend(parsed.documents);
        all.errors.extend(parsed.errors);
        all.notes.extend(parsed.notes);
        all.others.extend(parsed.others);
    }
    Ok(all)
}

fn resources(documents: Vec<InputDocument>, errors: &mut Vec<String>) -> ClusterResources {
    let mut resources = ClusterResources::default();
    for document in documents {
        if let Err(e) = resources.add(document.object) {
            errors.push(format!("{}: {e}", document.location));
        }
    }
    resources
}

fn validate(files: &[String], complete: bool) -> ExitCode {
    let ParsedInput {
        documents,
        mut errors,
        notes,
        others,
    } = match read_all(files) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    for note in notes {
        eprintln!("note: {note}");
    }
    for other in &others {
        eprintln!(
            "skipped: {}: {} (not FerroLB or MetalLB configuration)",
            other.location, other.what
        );
    }
    let resources = resources(documents, &mut errors);
    let (result, warnings) = Config::build_with_warnings(&resources);
    // A reference to an object not in these files is a warning, whichever kind it names, as
    // MetalLB's webhooks treat them; with --complete the files are everything, so an error.
    let mut build_errors = result.err().map(|e| e.0).unwrap_or_default();
    let mut warnings = warnings;
    if complete {
        let (dangling, rest): (Vec<_>, Vec<_>) = warnings
            .into_iter()
            .partition(|w| w.reason.is_dangling_reference());
        warnings = rest;
        build_errors.extend(dangling);
    } else {
        let (dangling, rest): (Vec<_>, Vec<_>) = build_errors
            .into_iter()
            .partition(|e| e.reason.is_dangling_reference());
        build_errors = rest;
        warnings.extend(dangling);
    }
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    errors.extend(build_errors.iter().map(ToString::to_string));
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        for e in &errors {
            eprintln!("{e}");
        }
        ExitCode::from(EXIT_INVALID)
    }
}

fn migrate_files(files: &[String]) -> ExitCode {
    let ParsedInput {
        documents,
        errors,
        notes,
        others,
    } = match read_all(files) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    for note in notes {
        eprintln!("note: {note}");
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        return ExitCode::from(EXIT_INVALID);
    }
    let migrated = migrate::migrate(documents);
    for note in &migrated.notes {
        eprintln!("note: {note}");
    }
    match passed_through(&others).and_then(|text| Ok(text + &migrate::to_yaml(&migrated.objects)?))
    {
        Ok(yaml) => print!("{yaml}"),
        Err(e) => {
            eprintln!("error: cannot write YAML: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    // The result must be a valid FerroLB configuration; say so if it is not.
    let mut resources = ClusterResources::default();
    for object in migrated.objects {
        // Only FerroLB objects come out of `migrate`; `add` cannot fail for them.
        let _ = resources.add(object);
    }
    match Config::build(&resources) {
        Ok(_) => ExitCode::SUCCESS,
        Err(config_errors) => {
            eprintln!("the migrated configuration is invalid:");
            for line in config_errors.lines() {
                eprintln!("{line}");
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// The objects that are not ours, as YAML documents, unchanged.
fn passed_through(others: &[OtherObject]) -> Result<String, String> {
    let mut text = String::new();
    for other in others {
        let yaml = serde_saphyr::to_string(&other.value)
            .map_err(|e| format!("{}: {e}", other.location))?;
        text.push_str("---\n");
        text.push_str(&yaml);
    }
    Ok(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate { files, complete } => validate(files, *complete),
        Command::Migrate { files } => migrate_files(files),
    }
}
