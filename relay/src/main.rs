//! The `chatrelay` binary: parse the command line and hand over to `relay::cli`.

fn main() -> std::process::ExitCode {
    relay::cli::main()
}
