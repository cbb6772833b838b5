//! Sled's panics on a damaged store, caught without the process-wide
//! panic hook printing them: a quiet window for this thread's panics only.

thread_local! {
    /// This thread is in [`quietly`]: its panics are caught there.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `catch_unwind` with the panic hook (process-wide) kept quiet for this
/// thread's panics only, for as long as `f` runs: they go to the log at
/// debug; another thread's panic meanwhile goes to the hook that was set
/// before, which is set again after.
pub(super) fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    // Nested, or during an unwind (the hook cannot be changed then): the
    // hook in place does.
    if QUIET.with(|q| q.get()) || std::thread::panicking() {
        return catch_unwind(AssertUnwindSafe(f));
    }
    let _one = crate::sync::lock(&WINDOW);
    quiet_window(f)
}

/// One quiet window at a time: two stores opened at once would each
/// restore the other's hook (and a test that sets its own hook holds it).
static WINDOW: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`quietly`]'s window, with [`WINDOW`] held by the caller.
fn quiet_window<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    use std::panic::{catch_unwind, set_hook, take_hook, AssertUnwindSafe};
    let before = std::sync::Arc::new(take_hook());
    let others = before.clone();
    set_hook(Box::new(move |info| {
        if QUIET.with(|q| q.get()) {
            tracing::debug!(panic = %info, "sled panicked on a damaged store (caught)");
        } else {
            others(info)
        }
    }));
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    // Ours, dropped: `before` is held here alone again. A panic hook runs
    // under the lock `take_hook` takes, so none is running ours now.
    drop(take_hook());
    match std::sync::Arc::try_unwrap(before) {
        Ok(hook) => set_hook(hook),
        Err(shared) => set_hook(Box::new(move |info| shared(info))),
    }
    r
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A panic of this thread inside [`super::quietly`] is caught and not
    /// given to the hook; another thread's panic meanwhile still is; after
    /// it, the hook that was there is there again.
    #[test]
    fn a_quiet_window_keeps_only_its_own_threads_panics_from_the_hook() {
        static OTHER: AtomicUsize = AtomicUsize::new(0);
        static QUIET: AtomicUsize = AtomicUsize::new(0);
        static AFTER: AtomicUsize = AtomicUsize::new(0);
        // Counts ours, passes every panic on: other tests' panics still
        // print.
        // No store opens (and swaps the hook) while this test's hook is in.
        let _window = crate::sync::lock(&super::WINDOW);
        let original = Arc::new(std::panic::take_hook());
        let inner = original.clone();
        std::panic::set_hook(Box::new(move |info| {
            let text = info.to_string();
            for (marker, n) in [
                ("marker-other-thread", &OTHER),
                ("marker-quiet", &QUIET),
                ("marker-after", &AFTER),
            ] {
                if text.contains(marker) {
                    n.fetch_add(1, Ordering::SeqCst);
                }
            }
            inner(info)
        }));
        let r = super::quiet_window(|| {
            let other = std::thread::spawn(|| panic!("marker-other-thread"));
            assert!(other.join().is_err());
            panic!("marker-quiet");
        });
        let text = super::super::check::panic_text(&*r.expect_err("the panic is caught"));
        assert!(text.contains("marker-quiet"), "{text}");
        assert_eq!(OTHER.load(Ordering::SeqCst), 1, "the other thread's panic");
        assert_eq!(
            QUIET.load(Ordering::SeqCst),
            0,
            "the quiet panic reached the hook"
        );
        let after = std::panic::catch_unwind(|| panic!("marker-after"));
        assert!(after.is_err());
        assert_eq!(
            AFTER.load(Ordering::SeqCst),
            1,
            "the hook was not set again"
        );
        // The harness's own hook back.
        drop(std::panic::take_hook());
        if let Ok(hook) = Arc::try_unwrap(original) {
            std::panic::set_hook(hook);
        }
    }
}
