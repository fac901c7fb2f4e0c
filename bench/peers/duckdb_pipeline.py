"""The prepare pipeline written in DuckDB SQL: same normalization, consent, mapping, delta, batching.

A peer, not a product: it implements what transforms/ does for valid rows (rejected rows are
only counted), so that its adds and removes can be checked equal to ours before its time
counts. Regular expressions are the ones in transforms/identifiers.py (RE2 accepts them); phone
numbers are read by the same steps as ours (bench/peers/duckdb_phones.py).
"""
from __future__ import annotations

from pathlib import Path

import duckdb

from audience_relay.pipeline.config import Config
from audience_relay.transforms.identifiers import EMAIL_MAX_LENGTH, EMAIL_PATTERN, UUID_PATTERN, WHITESPACE, ZERO_MAID
from bench.peers.duckdb_phones import phone_ctes, register_library


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _strip(column: str) -> str:
    return f"regexp_replace({column}, {_q(f'^{WHITESPACE}|{WHITESPACE}$')}, '', 'g')"


def _normalized_sql(source: str, default_country_code: str) -> str:
    """Valid rows with their canonical identifier (the `id_normalized` of transforms/)."""
    # Phone numbers are read once per distinct value, each step materialized: inlined, the steps'
    # expressions would be copied into each other's (the validity test names the number hundreds of times).
    phone_steps, phoned = phone_ctes("phone_values", "phone", default_country_code)
    return f"""
    WITH cleaned AS (
        SELECT {_strip('user_id')} AS user_id, {_strip('segment_id')} AS segment_id,
               lower({_strip('id_type')}) AS id_type,
               regexp_replace(id_value, {_q(WHITESPACE)}, '', 'g') AS compact, id_value
        FROM {source}
    ), typed AS (
        SELECT *,
            CASE WHEN id_type = 'email' THEN lower({_strip('id_value')}) END AS email,
            CASE WHEN id_type = 'phone' THEN {_strip('id_value')} END AS phone,
            CASE WHEN id_type = 'maid' THEN CASE WHEN regexp_full_match(lower(compact), '[0-9a-f]{{32}}')
                 THEN concat_ws('-', substr(lower(compact), 1, 8), substr(lower(compact), 9, 4), substr(lower(compact), 13, 4),
                                substr(lower(compact), 17, 4), substr(lower(compact), 21, 12))
                 ELSE lower(compact) END END AS maid,
            CASE WHEN id_type = 'external_id' THEN {_strip('id_value')} END AS external_id
        FROM cleaned
    ), phone_values AS (
        SELECT DISTINCT {_strip('id_value')} AS phone FROM {source} WHERE lower({_strip('id_type')}) = 'phone'
    ), {", ".join(phone_steps)}
    SELECT user_id, segment_id, id_type, coalesce(email, e164, maid, external_id) AS id_normalized
    FROM typed LEFT JOIN {phoned} USING (phone)
    WHERE coalesce(user_id, '') <> '' AND coalesce(segment_id, '') <> '' AND coalesce(compact, '') <> ''
      AND CASE id_type
          WHEN 'email' THEN length(email) <= {EMAIL_MAX_LENGTH} AND NOT regexp_matches(email, {_q(WHITESPACE)})
                            AND regexp_matches(email, {_q(EMAIL_PATTERN)})
                            AND NOT (split_part(email, '@', 2) IN ('gmail.com', 'googlemail.com')
                                     AND replace(split_part(split_part(email, '@', 1), '+', 1), '.', '') = '')
          WHEN 'phone' THEN e164 IS NOT NULL
          WHEN 'maid' THEN regexp_matches(maid, {_q(UUID_PATTERN)}) AND maid <> {_q(ZERO_MAID)}
          WHEN 'external_id' THEN length(external_id) <= 256
          ELSE false END
    """


def _tables(con: duckdb.DuckDBPyConnection, config: Config) -> None:
    destinations = config.active_destinations
    con.execute("CREATE TEMP TABLE mapping (destination_id VARCHAR, segment_id VARCHAR, audience_id VARCHAR)")
    con.executemany("INSERT INTO mapping VALUES (?, ?, ?)",
                    [(d.id, s, a) for d in destinations for a, segments in d.audiences.items() for s in segments])
    con.execute("CREATE TEMP TABLE rules (destination_id VARCHAR, id_type VARCHAR, hash BOOLEAN, plus BOOLEAN, gmail BOOLEAN, "
                "min_size BIGINT, mirror BOOLEAN, batch_size BIGINT)")
    con.executemany("INSERT INTO rules VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        (d.id, t, r.hash_sha256, r.phone_with_plus, r.gmail_canonical, d.guards.min_audience_size, d.sync_mode == "mirror", d.batch_size)
        for d in destinations for t in d.accepted_id_types for r in [d.identifier_rule(t)]])


MEMBERS_SQL = """
WITH keyed AS (
    SELECT r.destination_id, m.audience_id, n.id_type,
        CASE WHEN n.id_type = 'phone' AND NOT r.plus THEN substr(n.id_normalized, 2)
             WHEN n.id_type = 'email' AND r.gmail AND split_part(n.id_normalized, '@', -1) IN ('gmail.com', 'googlemail.com')
                  THEN replace(regexp_extract(split_part(n.id_normalized, '@', 1), '^([^+]*)', 1), '.', '') || '@'
                       || split_part(n.id_normalized, '@', -1)
             ELSE n.id_normalized END AS formatted, r.hash
    FROM normalized n
    JOIN rules r ON r.id_type = n.id_type
    JOIN mapping m ON m.destination_id = r.destination_id AND m.segment_id = n.segment_id
    WHERE NOT EXISTS (SELECT 1 FROM consent c WHERE c.user_id = n.user_id AND c.scope IN ('*', r.destination_id))
)
SELECT DISTINCT destination_id, audience_id, id_type, CASE WHEN hash THEN sha256(formatted) ELSE formatted END AS match_key
FROM keyed
"""

DELTA_SQL = """
WITH sizes AS (SELECT destination_id, audience_id, count(*) AS n FROM members GROUP BY ALL),
guarded AS (
    SELECT DISTINCT k.destination_id, k.audience_id
    FROM (SELECT destination_id, audience_id FROM members UNION SELECT destination_id, audience_id FROM previous) k
    JOIN (SELECT DISTINCT destination_id, min_size FROM rules) r USING (destination_id)
    LEFT JOIN sizes s USING (destination_id, audience_id)
    WHERE coalesce(s.n, 0) < r.min_size
),
changes AS (
    SELECT destination_id, audience_id, id_type, match_key, 'add' AS op FROM (
        SELECT destination_id, audience_id, id_type, match_key FROM members
        EXCEPT SELECT destination_id, audience_id, id_type, match_key FROM previous)
    UNION ALL
    SELECT destination_id, audience_id, id_type, match_key, 'remove' AS op FROM (
        SELECT destination_id, audience_id, id_type, match_key FROM previous
        EXCEPT SELECT destination_id, audience_id, id_type, match_key FROM members)
    WHERE destination_id IN (SELECT DISTINCT destination_id FROM rules WHERE mirror)
)
SELECT c.*, (row_number() OVER (PARTITION BY c.destination_id, c.audience_id, c.op ORDER BY hash(c.match_key)) - 1)
            // b.batch_size AS batch_number
FROM changes c
JOIN (SELECT DISTINCT destination_id, batch_size FROM rules) b USING (destination_id)
ANTI JOIN guarded g ON g.destination_id = c.destination_id AND g.audience_id = c.audience_id
"""


def run(config: Config, membership: str, consent: str, previous: str | None, out: Path, threads: int) -> dict:
    """Prepare one day; writes `out/batches/` (hive-partitioned) and `out/snapshot.parquet`."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": threads})
    _tables(con, config)
    con.execute(f"CREATE TEMP TABLE consent AS SELECT {_strip('user_id')} AS user_id, {_strip('scope')} AS scope "
                f"FROM read_parquet({_q(membership_glob(consent))})")
    source = f"read_parquet({_q(membership_glob(membership))})"
    register_library(con, config.defaults.default_country_code)
    con.execute(f"CREATE TEMP TABLE normalized AS {_normalized_sql(source, config.defaults.default_country_code)}")
    con.execute(f"CREATE TEMP TABLE members AS {MEMBERS_SQL}")
    if previous:
        con.execute(f"CREATE TEMP TABLE previous AS SELECT * FROM read_parquet({_q(previous)})")
    else:
        con.execute("CREATE TEMP TABLE previous AS SELECT * FROM members WHERE false")
    con.execute(f"COPY ({DELTA_SQL}) TO {_q(str(out / 'batches'))} (FORMAT PARQUET, PARTITION_BY (destination_id, audience_id, op))")
    con.execute(f"COPY members TO {_q(str(out / 'snapshot.parquet'))} (FORMAT PARQUET)")
    rows = con.execute("SELECT count(*) FROM members").fetchone()[0]
    con.close()
    return {"members": rows}


def membership_glob(path: str) -> str:
    return str(Path(path) / "**" / "*.parquet") if Path(path).is_dir() else path


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True)
    parser.add_argument("--consent", required=True)
    parser.add_argument("--previous", help="the previous day's snapshot.parquet written by this peer")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    args = parser.parse_args(argv)
    print(json.dumps(run(load_config(args.config), args.input, args.consent, args.previous, Path(args.out), args.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
