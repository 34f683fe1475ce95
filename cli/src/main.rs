//! `mmckpt`: inspect and load PyTorch checkpoints from the command line (see
//! `mmckpt_cli::USAGE` and the README's `## Command line`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = mmckpt_cli::run(
        std::env::args_os().skip(1),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}
