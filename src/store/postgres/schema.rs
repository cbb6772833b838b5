//! The schema: versioned migrations, each applied once, in order.

use super::conn::{Conn, Db};
use super::{ms, why};
use crate::store::StoreError;

/// The newest schema this build knows.
pub const SCHEMA_VERSION: i32 = 5;

/// Versioned migrations, applied in order, each once, in one transaction
/// under an advisory lock (instances starting together take turns).
pub(super) const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE requests (
    id text PRIMARY KEY,
    case_no text NOT NULL,
    state text NOT NULL,
    registry text NOT NULL,
    due_ms bigint,
    work text,
    record text NOT NULL
);
CREATE INDEX requests_due ON requests (due_ms, id) WHERE due_ms IS NOT NULL;
CREATE INDEX requests_case ON requests (case_no, id);
CREATE INDEX requests_sending ON requests (registry, due_ms) WHERE state = 'sending';
CREATE TABLE documents (id text PRIMARY KEY, sealed bytea NOT NULL);
CREATE TABLE idempotency (
    client text NOT NULL,
    key text NOT NULL,
    entry text NOT NULL,
    created_ms bigint NOT NULL,
    PRIMARY KEY (client, key)
);
CREATE TABLE events (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    created_ms bigint NOT NULL,
    body text NOT NULL,
    done boolean NOT NULL DEFAULT false
);
CREATE INDEX events_waiting ON events (seq) WHERE NOT done;
CREATE TABLE audit (seq bigint PRIMARY KEY, entry text NOT NULL);
CREATE TABLE audit_subject (subject text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (subject, seq));
CREATE TABLE audit_head (one int PRIMARY KEY CHECK (one = 1), seq bigint NOT NULL, hash text NOT NULL);
CREATE TABLE gates (
    registry text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    paused_until bigint,
    limits text
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE audit_pending (id bigserial PRIMARY KEY, draft text NOT NULL);
"#,
    ),
    (
        3,
        // A gate row is made by the first lease of its registry; only an
        // administrator's pause or resume makes its pause columns count
        // (over the configuration's `paused`).
        r#"
ALTER TABLE gates ADD COLUMN pause_set boolean NOT NULL DEFAULT false;
"#,
    ),
    (
        4,
        // Queries instead of scans: the columns the admin list, the
        // dashboard and the deadline watch select by, and counters by
        // registry and state kept by a trigger in the writing transaction.
        // Counters are spread over 16 rows per (registry, state), picked by
        // transaction id, so concurrent writers rarely wait for each other;
        // a read sums them. The backfill computes what
        // `RequestRecord::needs_attention` and `at_risk_open` say.
        r#"
ALTER TABLE requests
    ADD COLUMN deadline_ms bigint,
    ADD COLUMN attention boolean NOT NULL DEFAULT false,
    ADD COLUMN at_risk boolean NOT NULL DEFAULT false;
UPDATE requests SET
    deadline_ms = (record::jsonb->>'deadline_ms')::bigint,
    attention = (state = 'dead' OR (state IN ('queued', 'sending', 'awaiting', 'retrying')
                 AND jsonb_array_length(record::jsonb->'attempts') >= 2)),
    at_risk = (state NOT IN ('delivered', 'dead', 'cancelled')
               AND coalesce((record::jsonb->>'at_risk')::boolean, false));
CREATE INDEX requests_state ON requests (state, id);
CREATE INDEX requests_attention ON requests (id) WHERE attention;
CREATE INDEX requests_deadline ON requests (deadline_ms, id)
    WHERE state NOT IN ('delivered', 'dead', 'cancelled');
CREATE TABLE request_counts (
    registry text NOT NULL,
    state text NOT NULL,
    shard int NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (registry, state, shard)
);
INSERT INTO request_counts
    SELECT registry, state, 0, count(*) FROM requests GROUP BY registry, state;
INSERT INTO request_counts
    SELECT registry, '!at_risk', 0, count(*) FROM requests WHERE at_risk GROUP BY registry;
CREATE FUNCTION jumgw_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    spread int := (txid_current() % 16)::int;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO request_counts VALUES (OLD.registry, OLD.state, spread, -1)
            ON CONFLICT (registry, state, shard) DO UPDATE SET n = request_counts.n - 1;
        IF OLD.at_risk THEN
            INSERT INTO request_counts VALUES (OLD.registry, '!at_risk', spread, -1)
                ON CONFLICT (registry, state, shard) DO UPDATE SET n = request_counts.n - 1;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO request_counts VALUES (NEW.registry, NEW.state, spread, 1)
            ON CONFLICT (registry, state, shard) DO UPDATE SET n = request_counts.n + 1;
        IF NEW.at_risk THEN
            INSERT INTO request_counts VALUES (NEW.registry, '!at_risk', spread, 1)
                ON CONFLICT (registry, state, shard) DO UPDATE SET n = request_counts.n + 1;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER requests_count AFTER INSERT OR DELETE ON requests
    FOR EACH ROW EXECUTE FUNCTION jumgw_count();
CREATE TRIGGER requests_recount AFTER UPDATE OF state, registry, at_risk ON requests
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.registry IS DISTINCT FROM NEW.registry
          OR OLD.at_risk IS DISTINCT FROM NEW.at_risk)
    EXECUTE FUNCTION jumgw_count();
"#,
    ),
    (
        5,
        // Documents waiting for their timestamp, by when it is next to be
        // asked for; none before this. Since X-Road, also a pending signed
        // document: the column is `RequestRecord::evidence_due_ms`.
        r#"
ALTER TABLE requests ADD COLUMN stamp_ms bigint;
CREATE INDEX requests_stamp ON requests (stamp_ms, id) WHERE stamp_ms IS NOT NULL;
"#,
    ),
];

/// The advisory lock key of migrations ("jumgw" in ASCII).
const MIGRATION_LOCK: i64 = 0x6a_75_6d_67_77;

/// Applies the migrations this database lacks, in one transaction under
/// an advisory lock (instances starting together take turns).
pub(super) async fn migrate(c: &mut Conn, url: &str) -> Result<(), StoreError> {
    let err = |e: tokio_postgres::Error| StoreError::Postgres {
        url: url.to_owned(),
        detail: format!("applying the schema: {}", why(&e)),
    };
    let t = c.transaction().await.map_err(err)?;
    t.run("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    t.batch_execute(
        "CREATE TABLE IF NOT EXISTS jumgw_schema (version int PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(err)?;
    let found: i32 = t
        .one("SELECT coalesce(max(version), 0) FROM jumgw_schema", &[])
        .await
        .map_err(err)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: url.to_owned(),
            found: found as u32,
            known: SCHEMA_VERSION as u32,
        });
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        t.batch_execute(sql).await.map_err(err)?;
        t.run("INSERT INTO jumgw_schema (version) VALUES ($1)", &[v])
            .await
            .map_err(err)?;
        tracing::info!(version = v, "applied PostgreSQL schema migration");
    }
    let genesis = crate::store::trail::Head::default();
    t.run(
        "INSERT INTO audit_head (one, seq, hash) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
        &[&ms(genesis.seq), &genesis.hash],
    )
    .await
    .map_err(err)?;
    t.commit().await.map_err(err)
}
