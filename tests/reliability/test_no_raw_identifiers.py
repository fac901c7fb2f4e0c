"""No raw identifier is written anywhere it should not be: a whole run, searched for planted canaries.

Distinctive emails, phones, MAIDs and external ids (valid ones, invalid ones that are rejected,
overlong ones, one inside a malformed record) go through `prepare`, `deliver` (Meta and Google
emulators, one of each refusing every batch with an error that quotes the request the way the
real APIs do, the real OpenSSH SFTP server, S3 on moto), `dead-letters` and `report`, each as
its own process with its stdout and stderr captured. The ad platforms added since (TikTok,
Snapchat, LinkedIn, X, Pinterest) are in the same run, one accepting and one refusing destination
each, against their emulator dialects. Then every file under the output root
(Parquet and gzip decoded, the SQLite state store read column by column) and every captured
stream is searched, case-insensitively, for each canary in its raw and normalized forms (and
phones as digits, with and without country code).

Excluded from the search, because they are copies of the input by design (each is checked for
what it must hold instead):
- `runs/*/rejected/`: the rejected input rows with their reason, raw by contract (DESIGN.md);
  the search must find the rejected canaries there, which also proves the search works;
- `runs/*/batches/`, `runs/*/snapshot/` and its committed copy `snapshots/<id>/<run>/`: what
  the destinations receive, per destination:
  SHA-256 hex for every hashed id type, MAIDs in clear where the profile sends them in clear
  (Meta, Google, S3 objects); checked to hold nothing else.
The payloads themselves (the emulators' requests, the SFTP files, the S3 objects) are outside
the output root and checked the same way: emails and phones leave hashed, and only as hashes
of their normalized forms.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import yaml

from audience_relay.connectors.destinations.registry import PROFILES
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator
from tests.integration.platforms import PLATFORMS, emulator_config, secret

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "canary1"
BUCKET = "no-raw-partner-drop"
HEX64 = re.compile(r"[0-9a-f]{64}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Excluded paths under the output root (relative, POSIX), and why: see the module docstring.
EXCLUDED = {
    "rejected": re.compile(r"^runs/[^/]+/rejected/"),
    "batches": re.compile(r"^runs/[^/]+/batches/"),
    "snapshot": re.compile(r"^runs/[^/]+/snapshot/"),
    "committed_snapshot": re.compile(r"^snapshots/[^/]+/[^/]+/(members|kept)/"),   # the commit's copy of `snapshot`
}


@dataclass(frozen=True)
class Canary:
    id_type: str
    raw: str
    needles: tuple[str, ...]  # what must not be found: raw, normalized and other forms (lower-cased at search)
    delivered: bool           # valid: reaches batches and destinations; else rejected


def _email(raw: str, normalized: str, *more: str) -> Canary:
    local = normalized.split("@")[0]
    return Canary("email", raw, (raw.strip(), normalized, local, *more), True)


CANARIES = [
    _email("  Canary.Person+tag@Example.com ", "canary.person+tag@example.com"),
    # Google canonicalizes googlemail addresses: dots and +tag removed before hashing.
    _email("Canary.Gmail.Dots+promo@GoogleMail.com", "canary.gmail.dots+promo@googlemail.com", "canarygmaildots@googlemail.com"),
    Canary("email", "Canary.Invalid@@Example..com", ("canary.invalid@@example..com", "canary.invalid"), False),
    Canary("email", "canary-without-an-at-sign.example.com", ("canary-without-an-at-sign",), False),
    Canary("email", "Canary.Overlong." + "x" * 250 + "@Example.com", ("canary.overlong.xxxx",), False),
    Canary("phone", "(415) 555-0134", ("(415) 555-0134", "+14155550134", "14155550134", "4155550134", "415-555-0134", "555-0134"), True),
    Canary("phone", "+44 20 7946 0958", ("+44 20 7946 0958", "+442079460958", "442079460958", "2079460958", "7946 0958"), True),
    # 011 is the international dialling prefix from the default country (1); libphonenumber reads
    # "0033 ..." there as an invalid national number.
    Canary("phone", "011 33 6 71 29 84 53", ("011 33 6 71 29 84 53", "+33671298453", "33671298453", "01133671298453", "671298453"), True),
    Canary("phone", "415-555-CANARY", ("415-555-canary",), False),
    Canary("maid", "6D92078A-8246-4BA4-AE5B-76104861E7DC", ("6d92078a-8246-4ba4-ae5b-76104861e7dc", "6d92078a82464ba4ae5b76104861e7dc"), True),
    Canary("maid", "0F8FAD5BD9CB469FA16570867728950E", ("0f8fad5bd9cb469fa16570867728950e", "0f8fad5b-d9cb-469f-a165-70867728950e"), True),
    Canary("maid", "canary-maid-not-a-uuid", ("canary-maid-not-a-uuid",), False),
    Canary("external_id", "EXT-Canary-7731", ("ext-canary-7731",), True),
    Canary("external_id", "EXT-CANARY-OVERLONG-" + "y" * 300, ("ext-canary-overlong-yyyy",), False),
]
# One CSV line that is not a record (an unterminated quote): kept as `malformed_record`.
MALFORMED_LINE = 'canary_bad,email,"Canary.Malformed@Example.com,seg_canary,extra\n'
MALFORMED_NEEDLES = ("canary.malformed@example.com", "canary.malformed")
ALL_NEEDLES = sorted({n.lower() for c in CANARIES for n in c.needles} | set(MALFORMED_NEEDLES))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _needle_owner(needle: str) -> str:
    for canary in CANARIES:
        if needle in (n.lower() for n in canary.needles):
            return f"{canary.id_type} {canary.raw[:40]!r}"
    return "the malformed record"


def found_in(text: str) -> list[str]:
    lowered = text.lower()
    return [needle for needle in ALL_NEEDLES if needle in lowered]


def write_input(folder: Path) -> Path:
    """Membership CSV: the canaries in `seg_canary` (alone, so that the refusing destinations' batches
    and the entries their errors quote are canaries), 300 ordinary rows, one malformed line."""
    folder.mkdir(parents=True)
    path = folder / "part-0.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "id_type", "id_value", "segment_id"])
        for i, canary in enumerate(CANARIES):
            writer.writerow([f"canary_u{i}", canary.id_type, canary.raw, "seg_canary"])
        for i in range(300):
            id_type, value = [("email", f"filler{i}@filler.test"), ("phone", f"+1 212 555 {i:04d}"),
                              ("maid", f"{i:08x}-1111-4222-8333-{i:012x}")][i % 3]
            writer.writerow([f"filler_u{i}", id_type, value, "seg_filler"])
    with path.open("a") as handle:
        handle.write(MALFORMED_LINE)
    return path


PINTEREST_LISTS = {"aud_all": "1001", "aud_canary": "1002"}   # Pinterest does not create its lists


def platform_destinations() -> list[dict]:
    """An accepting (`<name>_ok`) and a refusing (`<name>_refusing`) destination per new platform,
    taking every id type it takes (Pinterest: one per list)."""
    destinations = []
    for name, (profile, connection) in PLATFORMS.items():
        pinterest = profile == "pinterest_customer_lists"
        id_types = ["email"] if pinterest else sorted(PROFILES[profile].identifiers)
        for role, audiences in (("ok", {"aud_all": ["seg_canary", "seg_filler"]}), ("refusing", {"aud_canary": ["seg_canary"]})):
            destinations.append({"id": f"{name}_{role}", "kind": "http_api", "profile": profile, "id_types": id_types, "max_batch_size": 40,
                                 "credentials": {"env": f"{name.upper()}_{role.upper()}_SECRET"}, "audiences": audiences,
                                 "connection": connection | ({"audience_ids": {a: PINTEREST_LISTS[a] for a in audiences}} if pinterest else {})})
    return destinations


def write_config(path: Path, sftp) -> None:
    def http(destination_id: str, profile: str, id_types: list[str], audiences: dict, env: str, **connection) -> dict:
        base = "https://graph.facebook.com/v26.0" if profile.startswith("meta") else "https://datamanager.googleapis.com"
        return {"id": destination_id, "kind": "http_api", "profile": profile, "id_types": id_types, "max_batch_size": 40,
                "credentials": {"env": env}, "connection": {"base_url": base, **connection}, "audiences": audiences}

    everything = ["email", "phone", "maid", "external_id"]
    config = {
        "version": 1,
        "quality": {"row_count_band": None},
        "destinations": [
            http("meta_ok", "meta_custom_audiences", everything, {"aud_all": ["seg_canary", "seg_filler"]}, "META_ACCESS_TOKEN",
                 audience_ids={"aud_all": "23850000000000001"}),
            http("google_ok", "google_data_manager", ["email", "phone", "maid"], {"aud_all": ["seg_canary", "seg_filler"]},
                 "GOOGLE_DM_TOKEN", account_id="1234567890", audience_ids={"aud_all": "5550001"}),
            http("meta_refusing", "meta_custom_audiences", everything, {"aud_canary": ["seg_canary"]}, "META_ACCESS_TOKEN"),
            http("google_refusing", "google_data_manager", ["email", "phone", "maid"], {"aud_canary": ["seg_canary"]}, "GOOGLE_DM_TOKEN",
                 account_id="1234567890", audience_ids={"aud_canary": "5550002"}),
            {"id": "partner_sftp", "kind": "sftp", "profile": "sftp_gzip_csv", "id_types": everything, "max_batch_size": 100,
             "credentials": {"env": "PARTNER_SFTP_KEY"}, "sync_mode": "upsert",
             "connection": {"host": "127.0.0.1", "port": sftp.port, "username": sftp.username,
                            "remote_dir": str(sftp.root / "no-raw"), "known_hosts": str(sftp.known_hosts)},
             "audiences": {"partner_all": ["seg_canary", "seg_filler"]}},
            {"id": "partner_s3", "kind": "s3", "profile": "s3_objects", "id_types": everything, "max_batch_size": 100,
             "sync_mode": "upsert", "connection": {"bucket": BUCKET, "prefix": "incoming"},
             "audiences": {"partner_all": ["seg_canary", "seg_filler"]}},
            *platform_destinations(),
        ],
    }
    path.write_text(yaml.safe_dump(config))


@dataclass
class Job:
    name: str
    code: int
    stdout: str
    stderr: str


@dataclass
class ScannedRun:
    out: Path
    jobs: dict[str, Job]
    emulators: dict[str, HttpDestinationEmulator]
    sftp_dir: Path


def run_job(name: str, args: list[str], env: dict[str, str], logs: Path) -> Job:
    """`python -m cli.main ...` as its own process (Spark's JVM and Python workers included)."""
    logs.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "audience_relay.cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    (logs / f"{name}.out").write_text(done.stdout)
    (logs / f"{name}.err").write_text(done.stderr)
    return Job(name, done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def scanned(moto_server, sftp_server, tmp_path_factory) -> ScannedRun:
    root = tmp_path_factory.mktemp("no-raw")
    membership = write_input(root / "membership")
    config = root / "destinations.yaml"
    write_config(config, sftp_server)
    out = root / "out"
    logs = root / "logs"  # outside the output root: the captured streams are searched on their own
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
           "META_ACCESS_TOKEN": "test-meta-token", "GOOGLE_DM_TOKEN": "test-google-token", "PARTNER_SFTP_KEY": sftp_server.private_key}
    jobs = {}
    jobs["prepare"] = run_job("prepare", ["prepare", "--input", str(membership), "--out", str(out), "--config", str(config),
                                          "--run-id", RUN_ID, "--master", "local[2]"], env, logs)
    assert jobs["prepare"].code == 0, jobs["prepare"].stderr[-3000:]
    refusing = EmulatorConfig(refuse_echoing=True)
    platforms = {f"{name}_{role}": (profile, HttpDestinationEmulator(emulator_config(profile, refuse_echoing=role == "refusing")))
                 for name, (profile, _) in PLATFORMS.items() for role in ("ok", "refusing")}
    with HttpDestinationEmulator() as meta, HttpDestinationEmulator() as google, \
            HttpDestinationEmulator(refusing) as meta_refusing, HttpDestinationEmulator(refusing) as google_refusing:
        emulators = {"meta_ok": meta, "google_ok": google, "meta_refusing": meta_refusing, "google_refusing": google_refusing}
        with ExitStack() as running:
            for destination_id, (profile, emulator) in platforms.items():
                emulators[destination_id] = running.enter_context(emulator)
                env[f"{destination_id.upper()}_SECRET"] = secret(profile, emulator.url)
            endpoints = [arg for name, emulator in emulators.items() for arg in ("--endpoint", f"{name}={emulator.url}")]
            jobs["deliver"] = run_job("deliver", ["deliver", "--out", str(out), "--run-id", RUN_ID, "--config", str(config),
                                                  "--workers", "1", "--master", "local[2]", *endpoints], env, logs)
    assert jobs["deliver"].code == 1, jobs["deliver"].stderr[-3000:]  # FAILED: the refusing destinations dead-lettered
    jobs["dead-letters"] = run_job("dead-letters", ["dead-letters", "--out", str(out), "--run-id", RUN_ID], env, logs)
    jobs["report"] = run_job("report", ["report", "--out", str(out), "--run", RUN_ID], env, logs)
    return ScannedRun(out, jobs, emulators, sftp_server.root / "no-raw")


# --- reading every kind of file as text ------------------------------------------------------------

def parquet_text(path: Path) -> str:
    table = pq.read_table(path)
    return json.dumps(table.to_pylist(), default=str, ensure_ascii=False)


def sqlite_text(path: Path) -> str:
    """Every value of every column of every table, as text (a byte grep misses nothing only uncompressed)."""
    values = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                values.extend(str(value) for value in row)
    return "\n".join(values)


def file_text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".parquet"):
        return parquet_text(path)
    if data[:16] == b"SQLite format 3\x00":
        return sqlite_text(path) + "\n" + data.decode("latin-1")
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace") + "\n" + data.decode("latin-1")


def output_files(out: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(scanned, excluded): every file under the output root, as (relative path, path)."""
    scanned, excluded = [], []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = path.relative_to(out).as_posix()
        (excluded if any(rule.match(relative) for rule in EXCLUDED.values()) else scanned).append((relative, path))
    return scanned, excluded


# --- the search ----------------------------------------------------------------------------------

def test_no_file_under_the_output_root_holds_a_raw_identifier(scanned):
    files, excluded = output_files(scanned.out)
    names = {relative for relative, _ in files}
    # What the search covers: the state store, manifest, summaries, outcomes, report, pointers.
    assert "state/delivery.db" in names and f"runs/{RUN_ID}/manifest.json" in names
    assert f"runs/{RUN_ID}/report.html" in names and f"runs/{RUN_ID}/delivery/summary.json" in names
    assert any(n.startswith(f"runs/{RUN_ID}/delivery/_outcomes/") and n.endswith(".parquet") for n in names)
    assert any(n.startswith(f"runs/{RUN_ID}/delivery/meta_refusing/") for n in names)
    assert {rule for rule, pattern in EXCLUDED.items() if any(pattern.match(r) for r, _ in excluded)} == set(EXCLUDED)
    leaks = {relative: [f"{n} ({_needle_owner(n)})" for n in found_in(file_text(path))] for relative, path in files}
    assert not {relative: found for relative, found in leaks.items() if found}


def test_no_job_output_holds_a_raw_identifier(scanned):
    for name, job in scanned.jobs.items():
        assert job.stdout or job.stderr, f"{name} printed nothing"
        leaks = [f"{n} ({_needle_owner(n)})" for n in found_in(job.stdout + "\n" + job.stderr)]
        assert not leaks, f"{name}: {leaks}"
    events = [json.loads(line) for line in scanned.jobs["deliver"].stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "deliver.destination_done" for e in events)
    assert any("_aws" in e for e in events)  # EMF metric lines are among what was searched
    assert any(e.get("event") == "prepare.done" for e in map(json.loads, filter(lambda l: l.startswith("{"), scanned.jobs["prepare"].stderr.splitlines())))


def test_refused_batches_keep_the_destination_error_with_what_it_quoted_redacted(scanned):
    letters = [json.loads(line) for line in scanned.jobs["dead-letters"].stdout.splitlines()]
    refused = {letter["destination_id"] for letter in letters}
    assert refused == {"meta_refusing", "google_refusing", *(f"{name}_refusing" for name in PLATFORMS)}
    assert all(scanned.emulators[d].score.refused["invalid"] > 0 for d in refused)
    # The answer said why (Meta's code, Google's status) and quoted entries, which are gone.
    assert any("code 100" in letter["error"] and "[redacted]" in letter["error"] for letter in letters)
    assert any("INVALID_ARGUMENT" in letter["error"] and "[redacted]" in letter["error"] for letter in letters)
    for letter in letters:
        assert not UUID.search(letter["error"]) and not HEX64.search(letter["error"]), letter["error"]


def test_excluded_paths_hold_what_they_must_and_the_search_finds_it(scanned):
    _, excluded = output_files(scanned.out)
    rejected = "\n".join(file_text(p) for r, p in excluded if EXCLUDED["rejected"].match(r) and r.endswith(".parquet"))
    # The rejected rows are the input rows, raw by contract: the search finds every rejected canary.
    for canary in CANARIES:
        if not canary.delivered:
            assert canary.needles[0].lower() in rejected.lower(), canary.raw[:40]
    assert "canary.malformed@example.com" in rejected.lower()
    for relative, path in excluded:
        if not relative.endswith(".parquet") or EXCLUDED["rejected"].match(relative):
            continue
        destination = (re.search(r"destination_id=([^/]+)", relative) or re.match(r"snapshots/([^/]+)/", relative)).group(1)
        for row in pq.read_table(path, columns=["id_type", "match_key"]).to_pylist():
            profile = next((p for n, (p, _) in PLATFORMS.items() if destination.startswith(f"{n}_")), None)
            if profile is not None:   # a new platform: what its rule sends in clear (X: partner_user_id), hashed otherwise
                clear = not PROFILES[profile].identifiers[row["id_type"]].hash_sha256
                form = (UUID if row["id_type"] == "maid" else re.compile(r"\S+")) if clear else HEX64
            else:
                form = UUID if row["id_type"] == "maid" and destination not in ("partner_sftp",) else HEX64
            assert form.fullmatch(row["match_key"]), (relative, row["id_type"])


# --- what left: hashed whenever the destination takes hashes --------------------------------------

def test_http_payloads_carry_emails_and_phones_hashed_from_their_normalized_form(scanned):
    meta, google = scanned.emulators["meta_ok"].score, scanned.emulators["google_ok"].score
    for score in (meta, google):
        members = {member for (_, op), keys in score.members.items() if op == "add" for member in keys}
        assert members, "nothing was delivered"
        for id_type, key in members:
            assert (UUID if id_type == "maid" else HEX64).fullmatch(key), (id_type, key)
    meta_keys = {key for keys in meta.members.values() for _, key in keys}
    google_keys = {key for keys in google.members.values() for _, key in keys}
    # Meta: phone digits without `+`; Google: E.164 with `+`, googlemail canonicalized.
    assert {sha256("canary.person+tag@example.com"), sha256("canary.gmail.dots+promo@googlemail.com"),
            sha256("14155550134"), sha256("442079460958"), sha256("33671298453"), sha256("EXT-Canary-7731"),
            "6d92078a-8246-4ba4-ae5b-76104861e7dc", "0f8fad5b-d9cb-469f-a165-70867728950e"} <= meta_keys
    assert {sha256("canary.person+tag@example.com"), sha256("canarygmaildots@googlemail.com"),
            sha256("+14155550134"), sha256("+442079460958"), "6d92078a-8246-4ba4-ae5b-76104861e7dc"} <= google_keys
    assert not [n for n in ALL_NEEDLES if any(n in key.lower() for key in meta_keys | google_keys) and not UUID.fullmatch(n)]


def test_every_new_platform_receives_hashes_of_the_normalized_forms_its_rules_ask(scanned):
    for name, (profile, _) in PLATFORMS.items():
        score = scanned.emulators[f"{name}_ok"].score
        members = {member for (_, op), keys in score.members.items() if op == "add" for member in keys}
        assert members, f"nothing was delivered to {name}"
        rules = PROFILES[profile].identifiers
        for id_type, key in members:
            assert rules[id_type].hash_sha256 or id_type != "email" and id_type != "phone", (name, id_type)   # never in clear
            assert (HEX64 if rules[id_type].hash_sha256 else UUID if id_type == "maid" else re.compile(r"\S+")).fullmatch(key), (name, id_type, key)
        keys = {key for _, key in members}
        assert sha256("canary.person+tag@example.com") in keys, name
        if "phone" in rules:   # Snapchat: digits with the country code; TikTok and X: E.164 with `+`
            assert sha256("14155550134" if not rules["phone"].phone_with_plus else "+14155550134") in keys, name
        sent_in_clear = {c.id_type for c in CANARIES} & {t for t, rule in rules.items() if not rule.hash_sha256}
        needles = [n for c in CANARIES if c.id_type not in sent_in_clear for n in c.needles]
        assert not [n for n in needles if any(n.lower() in key.lower() for key in keys)], name


def test_file_destinations_receive_hashes_and_only_the_clear_maids_the_profile_sends(scanned):
    sftp_rows = [row for path in sorted(scanned.sftp_dir.rglob("*.csv.gz"))
                 for row in csv.DictReader(gzip.decompress(path.read_bytes()).decode().splitlines())]
    assert sftp_rows and all(HEX64.fullmatch(row["id"]) for row in sftp_rows)  # sftp_gzip_csv hashes every id type
    s3 = boto3.client("s3")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="incoming/").get("Contents", [])]
    s3_rows = [row for key in keys
               for row in csv.DictReader(gzip.decompress(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).decode().splitlines())]
    assert s3_rows and {row["id_type"] for row in s3_rows} == {"email", "phone", "maid", "external_id"}
    for row in s3_rows:
        assert (UUID if row["id_type"] == "maid" else HEX64).fullmatch(row["id"]), row
    for row in sftp_rows + s3_rows:
        assert not found_in(row["id"]) or UUID.fullmatch(row["id"])


# --- errors on bad input do not quote the values they refuse --------------------------------------

def _canary_rows(header: bool) -> str:
    lines = ["user_id,id_type,id_value,segment_id"] if header else []
    lines += [f"canary_u{i},{c.id_type},{c.raw.strip()},seg_canary" for i, c in enumerate(CANARIES) if "," not in c.raw]
    return "\n".join(lines) + "\n"


def _read_all(spark, path: Path, data_format: str | None = None) -> None:
    from audience_relay.pipeline.inputs import naming_unreadable_files, read_membership

    with naming_unreadable_files(str(path)):
        read_membership(spark, str(path), data_format).collect()


def test_a_csv_without_header_line_is_refused_without_quoting_its_first_row(spark, tmp_path):
    from audience_relay.pipeline.inputs import InputError

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-0.csv").write_text(_canary_rows(header=False))
    with pytest.raises(InputError) as refused:
        _read_all(spark, tmp_path / "in")
    assert "missing required column" in str(refused.value) and not found_in(str(refused.value)), str(refused.value)


def test_a_csv_file_without_the_header_of_the_others_is_named_without_quoting_its_first_row(spark, tmp_path):
    from audience_relay.pipeline.inputs import InputError

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-0.csv").write_text(_canary_rows(header=True))
    (tmp_path / "in" / "part-1.csv").write_text(_canary_rows(header=False))
    with pytest.raises(InputError) as refused:
        _read_all(spark, tmp_path / "in")
    assert "part-1.csv" in str(refused.value) and not found_in(str(refused.value)), str(refused.value)


def test_spark_s_own_log_lines_about_a_task_failing_on_a_record_are_redacted(tmp_path):
    """The same input as a process: Spark logs the failing task (BlockManager, Executor,
    TaskSetManager) with the record its CSV header check quoted; the job's log layout
    (pipeline/log4j2-redacting.properties) redacts it."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-0.csv").write_text(_canary_rows(header=True))
    (tmp_path / "in" / "part-1.csv").write_text(_canary_rows(header=False))
    (tmp_path / "in" / "_SUCCESS").touch()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    job = run_job("prepare", ["prepare", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--run-id", "r1",
                              "--master", "local[1]"], env, tmp_path / "logs")
    assert job.code == 2 and "part-1.csv" in job.stderr, job.stderr[-3000:]
    assert "ERROR Executor" in job.stderr and "Header: <redacted>" in job.stderr  # Spark's lines are there, redacted
    assert not found_in(job.stdout + job.stderr), [line for line in job.stderr.splitlines() if found_in(line)][:5]


def test_a_json_line_that_is_an_array_is_refused_without_quoting_it(spark, tmp_path):
    from audience_relay.pipeline.inputs import InputError

    (tmp_path / "in").mkdir()
    rows = [json.dumps([f"canary_u{i}", c.id_type, c.raw, "seg_canary"]) for i, c in enumerate(CANARIES)]
    (tmp_path / "in" / "part-0.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError) as refused:
        _read_all(spark, tmp_path / "in")
    assert not found_in(str(refused.value)), str(refused.value)


def test_a_failed_quality_gate_reports_shares_not_values(spark, tmp_path):
    from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config
    from audience_relay.pipeline.prepare import PrepareRequest, run_prepare
    from audience_relay.pipeline.quality import QualityError

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-0.csv").write_text(_canary_rows(header=True))  # half the rows are rejected
    (tmp_path / "in" / "_SUCCESS").touch()
    request = PrepareRequest(str(tmp_path / "in"), str(tmp_path / "out"), load_config(DEFAULT_CONFIG), "default", "q1")
    with pytest.raises(QualityError) as refused:
        run_prepare(spark, request)
    assert "reject_reason" in str(refused.value) and not found_in(str(refused.value)), str(refused.value)
    assert not found_in(json.dumps([line for line in str(refused.value).splitlines()]))


def test_a_secret_pasted_where_a_reference_belongs_is_not_echoed():
    from audience_relay.pipeline.config import DEFAULT_CONFIG, ConfigError, parse_config

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["destinations"][0]["credentials"] = {"env": "EAAB-canary-secret-token"}
    raw["destinations"][1]["credentials"] = {"token": "EAAB-canary-secret-token"}
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, "destinations.yaml")
    message = str(refused.value)
    assert "credentials.env" in message and "credentials.token: unknown key" in message
    assert "canary-secret" not in message.lower()


def test_a_crash_trace_is_printed_without_the_identifiers_it_quotes(capsys):
    """A Spark task failure reaches the driver as an exception quoting the row it failed on;
    the last line of defence prints the trace, redacted."""
    from audience_relay.pipeline.entry import run_guarded

    def fail():
        raise RuntimeError("Task failed on row (u1, email, Jane.Doe@Example.com, +1 (415) 555-0134, "
                           "AECE52E7-03EE-455A-B3C4-E57283966239)")

    assert run_guarded(fail) == 1
    printed = capsys.readouterr().err
    assert "RuntimeError: Task failed on row" in printed and "Traceback" in printed
    for raw in ("Jane.Doe@Example.com", "555-0134", "AECE52E7-03EE-455A-B3C4-E57283966239"):
        assert raw.lower() not in printed.lower()
    assert "<email>" in printed and "<digits>" in printed and "<maid>" in printed


def test_alerts_and_dead_letters_do_not_copy_identifiers_from_a_jobs_error_text():
    """Glue's answer for a failed job run carries the job's error message, and a Spark task
    failure quotes the row; the state machine's SNS alert and SQS dead letter copy the failure."""
    from audience_relay.orchestration.local.engine import JobFailed
    from audience_relay.orchestration.local.runner import LocalStateMachines
    from tests.integration.test_state_machines import GOOGLE, RESOURCES, RUN, ScriptedJobs

    class QuotingJobs(ScriptedJobs):
        def run_glue_job(self, job_name, arguments):
            self.calls.append((job_name, arguments))
            raise JobFailed("Job aborted: ValueError on row (u1, Jane.Doe@Example.com, +1 (415) 555-0134, "
                            "AECE52E7-03EE-455A-B3C4-E57283966239)")

    with LocalStateMachines([GOOGLE], RESOURCES, retry_scale=0.0) as machines:
        machines.bind(QuotingJobs(machines.aws.client("s3")))
        execution = machines.run("destination-google_dm", "quoting", RUN, timeout=60)
        alerts, letters = machines.alerts(), machines.dead_letters()
    assert execution.status == "FAILED" and len(alerts) == len(letters) == 1
    sent = json.dumps(alerts) + json.dumps(letters)
    assert "ValueError on row" in sent and "<email>" in sent and "<maid>" in sent
    for raw in ("jane.doe@example.com", "555-0134", "aece52e7-03ee-455a-b3c4-e57283966239"):
        assert raw not in sent.lower()
    assert json.loads(letters[0]["error"]["Cause"])["JobRunState"] == "FAILED"   # still Glue's answer, parseable
    # The failed execution's own Cause (the console, DescribeExecution, EventBridge) says the same, redacted.
    assert "ValueError on row" in execution.cause and "<email>" in execution.cause
    for raw in ("jane.doe@example.com", "555-0134", "aece52e7-03ee-455a-b3c4-e57283966239"):
        assert raw not in execution.cause.lower()
