//! For tests of the PostgreSQL store, here and in `tests/`: a fresh
//! database per test on the throw-away server that `./tests/run` starts.

/// A new, empty database on the server `$JUMGW_TEST_PG` names (a URL
/// without a database, `postgres://user@host:port`), as a URL.
///
/// Such tests are marked `#[cfg_attr(not(jumgw_pg), ignore = …)]` (see
/// `build.rs`): without a server they are listed as ignored, never as
/// passed; one run anyway (`--ignored`) without a server fails here.
pub fn fresh_database(tag: &str) -> String {
    let Ok(base) = std::env::var("JUMGW_TEST_PG") else {
        panic!(
            "this test needs PostgreSQL: JUMGW_TEST_PG is not set (./tests/run starts a server and sets it)"
        );
    };
    match super::postgres::create_database(&base, tag) {
        Ok(url) => url,
        Err(e) => panic!("cannot create a test database: {e}"),
    }
}
