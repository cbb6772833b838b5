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
    match super::postgres::create_database(&base, tag) {
        Ok(url) => Some(url),
        Err(e) => panic!("cannot create a test database: {e}"),
    }
}
