fn main() -> std::process::ExitCode {
    neo_ops::cli::main()
}
