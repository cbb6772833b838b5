// glibc's malloc took a fifth of the gateway's time under load (many
// threads allocating and freeing small buffers: its arenas, consolidation
// and locks); mimalloc's per-thread free lists do not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jum_gateway::cli::run()
}
