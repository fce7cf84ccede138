//! `qemu-run`: see the library for everything.
fn main() -> std::process::ExitCode {
    qemu_run::cli::main()
}
