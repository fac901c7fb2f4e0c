-- The run catalog: each run, the files it was made of (and those quarantined instead), and its
-- accounting per destination. Applied by `audience-relay catalog migrate` (yoyo-migrations).

CREATE TABLE runs (
    run_id      text PRIMARY KEY CHECK (run_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$'),
    trigger     text NOT NULL CHECK (trigger IN ('window', 'marker', 'schedule', 'manual')),
    input_uri   text NOT NULL,
    window_id   text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ingested_files (
    file_uri    text NOT NULL,
    etag        text NOT NULL,
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    outcome     text NOT NULL CHECK (outcome IN ('accepted', 'quarantined')),
    run_id      text REFERENCES runs (run_id),
    reason      text,
    window_id   text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_uri, etag),
    CHECK ((outcome = 'accepted') = (run_id IS NOT NULL)),
    CHECK ((outcome = 'quarantined') = (reason IS NOT NULL))
);
CREATE INDEX ingested_files_by_run ON ingested_files (run_id);

CREATE TABLE run_accounting (
    run_id           text NOT NULL REFERENCES runs (run_id),
    destination_id   text NOT NULL,
    status           text NOT NULL,
    input_rows       bigint NOT NULL CHECK (input_rows >= 0),
    delivered        bigint NOT NULL,
    pending          bigint NOT NULL,
    unchanged        bigint NOT NULL,
    consent_filtered bigint NOT NULL,
    unmapped         bigint NOT NULL,
    rejected         bigint NOT NULL,
    reconciles       boolean GENERATED ALWAYS AS
                         (delivered + pending + unchanged + consent_filtered + unmapped + rejected = input_rows) STORED,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, destination_id)
);
