// glibc's malloc took a fifth of the gateway's time under load (many
// threads allocating and freeing small buffers: its arenas, consolidation
// and locks); mimalloc's per-thread free lists do not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same place in its option
/// list in versions 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory is kept before it is given back to the system.
/// mimalloc's 10 ms gave pages back between one exchange and the next,
/// and the kernel zeroed them again for the next (`clear_page_erms`):
/// about a tenth of the gateway's CPU under load (BENCHMARKS.md). A
/// second keeps them through a burst and still returns them when idle.
/// `MIMALLOC_PURGE_DELAY` in the environment has the last word.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set takes an option number and a value and only
    // stores the value; it may be called at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    jum_gateway::cli::run()
}
