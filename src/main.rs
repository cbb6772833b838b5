fn main() -> std::process::ExitCode {
    jum_gateway::cli::run()
}
