//! For tests of the PostgreSQL store, here and in `tests/`: a fresh
//! database per test on the throw-away server that `./tests/run` starts.

/// A new, empty database on the server `$JUMGW_TEST_PG` names (a URL
/// without a database, `postgres://user@host:port`), as a URL. `None` when
/// the variable is unset, unless `$JUMGW_REQUIRE_PG` is set (as
/// `./tests/run` does): then a missing server fails the test.
pub fn fresh_database(tag: &str) -> Option<String> {
    let Ok(base) = std::env::var("JUMGW_TEST_PG") else {
        assert!(
            std::env::var_os("JUMGW_REQUIRE_PG").is_none(),
            "JUMGW_REQUIRE_PG is set but JUMGW_TEST_PG is not"
        );
        eprintln!("PostgreSQL tests skipped: JUMGW_TEST_PG is not set (./tests/run sets it)");
        return None;
    };
    let base = base.trim_end_matches('/').to_owned();
    let name = format!(
        "jumgw_{}_{}",
        tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let admin = format!("{base}/postgres");
    let sql = format!("CREATE DATABASE {name}");
    // The blocking client must not run on a runtime's thread.
    let made = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)
            .map_err(|e| format!("{admin}: {e}"))?;
        c.batch_execute(&sql).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("panicked".into()));
    if let Err(e) = made {
        panic!("cannot create a test database on {base}: {e}");
    }
    Some(format!("{base}/{name}"))
}
