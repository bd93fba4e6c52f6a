fn main() -> std::process::ExitCode {
    selfprivacy_api::cli::main()
}
