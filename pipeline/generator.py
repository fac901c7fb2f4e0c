"""Synthetic segment membership that looks like real audience data, for demos, tests and benchmarks.

Every value is a pure function of (seed, user, slot, day) through `xxhash64`, so a day can be
regenerated on any cluster shape and day 2 differs from day 1 only by the churn below:
- users: `users = records / 2.5`; each holds 1-5 segment slots (mean 2.5) and identifiers of
  several types (email 55%, phone 25%, maid 15%, external_id 5% of rows; `phone_share` moves
  the phone share and scales the others);
- segments: Zipf-like popularity over `segments` ids: a few huge segments and a long tail;
- dirt: case and whitespace noise, phone punctuation and national/international formats,
  upper-case IDFAs, invalid emails and phones, all-zero MAIDs, unknown id types and nulls;
- churn per day: `user_churn` of the users leave and as many new ones arrive, and each slot
  moves to another segment with probability `slot_churn`;
- consent: about 0.5% of users opt out, mostly of everything (`*`), some of one destination.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import phonenumbers
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from audience_relay.pipeline.errors import UsageError
from audience_relay.transforms.schemas import CONSENT, MEMBERSHIP

METADATA_FILE = "_generator.json"
SLOT_WEIGHTS = (0.30, 0.25, 0.20, 0.15, 0.10)  # 1..5 slots per user, mean 2.5
FIRST_NAMES = ["john", "mary", "wei", "fatima", "olga", "carlos", "aiko", "noah", "emma", "liam", "sofia", "arjun"]
LAST_NAMES = ["smith", "garcia", "chen", "khan", "ivanova", "silva", "tanaka", "brown", "muller", "rossi", "patel"]
DOMAINS = [("gmail.com", 0.30), ("yahoo.com", 0.15), ("outlook.com", 0.15), ("googlemail.com", 0.02),
           ("icloud.com", 0.10), ("example.org", 0.13), ("company-mail.net", 0.15)]


@functools.cache
def us_area_codes() -> list[str]:
    """Area codes libphonenumber knows as the United States' (about 380 of 200-999): real feeds
    hold numbers people have, and the phone rule is libphonenumber's. Asked for when a day is
    generated, not when the CLI (every job's entry point) is imported."""
    numbers = {code: phonenumbers.parse(f"+1{code}2345678") for code in range(200, 1000)}
    return [str(code) for code, number in numbers.items()
            if phonenumbers.region_code_for_number(number) == "US" and phonenumbers.is_valid_number(number)]


DEFAULT_PHONE_SHARE = 0.25  # with it, the other types' weights below add up to 1


class GeneratorError(UsageError):
    """Bad generator arguments or an unreadable `--previous` directory."""


@dataclass(frozen=True)
class GeneratorSpec:
    records: int
    seed: int = 42
    day: int = 1
    segments: int = 200
    user_churn: float = 0.02
    slot_churn: float = 0.03
    consent_rate: float = 0.005
    destinations: tuple[str, ...] = field(default=("meta_ads", "google_dm", "partner_sftp"))
    data_format: str = "parquet"
    compression: str | None = None
    phone_share: float = DEFAULT_PHONE_SHARE

    def __post_init__(self) -> None:
        if self.records < 1:
            raise GeneratorError(f"--records must be at least 1, got {self.records}")
        if self.day < 1:
            raise GeneratorError(f"--day must be at least 1, got {self.day}")
        if self.data_format not in ("parquet", "csv", "jsonl"):
            raise GeneratorError(f"--format must be parquet, csv or jsonl, got {self.data_format!r}")
        if self.compression not in (None, "gzip"):
            raise GeneratorError(f"--compression must be gzip or omitted, got {self.compression!r}")
        if not 0 <= self.phone_share <= 1:
            raise GeneratorError(f"--phone-share must be between 0 and 1, got {self.phone_share}")

    @property
    def id_type_mix(self) -> list[tuple[str, float]]:
        others = (1 - self.phone_share) / (1 - DEFAULT_PHONE_SHARE)
        return [("email", 0.55 * others), ("phone", self.phone_share), ("maid", 0.15 * others), ("external_id", 0.05 * others)]

    @property
    def users(self) -> int:
        return max(1, round(self.records / 2.5))


def spec_from_previous(previous_dir: str | Path, **overrides) -> GeneratorSpec:
    """The spec of the day after the one generated in `previous_dir`, same seed and size."""
    path = Path(previous_dir) / METADATA_FILE
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise GeneratorError(f"--previous {previous_dir}: cannot read {METADATA_FILE}: {error}") from None
    spec = previous["spec"]
    spec["destinations"] = tuple(spec["destinations"])
    spec["day"] = previous["spec"]["day"] + 1
    spec.update({k: v for k, v in overrides.items() if v is not None})
    return GeneratorSpec(**spec)


def _unit(seed: int, *parts: Column | str | int) -> Column:
    """A uniform [0, 1) value that depends only on the seed and the parts."""
    cols = [p if isinstance(p, Column) else F.lit(p) for p in parts]
    return F.pmod(F.xxhash64(F.lit(seed), *cols), F.lit(1 << 53)) / float(1 << 53)


def _pick(unit: Column, weighted: list[tuple[object, float]]) -> Column:
    """The value whose cumulative weight band `unit` falls in."""
    expression, cumulative = None, 0.0
    for value, weight in weighted[:-1]:
        cumulative += weight
        expression = (F.when(unit < cumulative, value) if expression is None else expression.when(unit < cumulative, value))
    return expression.otherwise(weighted[-1][0])


def _choice(unit: Column, values: list[str]) -> Column:
    return F.element_at(F.array(*[F.lit(v) for v in values]), (F.floor(unit * len(values)) + 1).cast("int"))


def _email(seed: int, user: Column, row_unit: Column) -> Column:
    first = _choice(_unit(seed, user, "first"), FIRST_NAMES)
    last = _choice(_unit(seed, user, "last"), LAST_NAMES)
    domain = _pick(_unit(seed, user, "domain"), DOMAINS)
    clean = F.concat(first, F.lit("."), last, user.cast("string"), F.lit("@"), domain)
    # gmail users sometimes sign up with +tags; the destination rules decide what that means.
    tagged = F.when(domain.isin("gmail.com", "googlemail.com") & (_unit(seed, user, "tag") < 0.1),
                    F.concat(first, F.lit("."), last, user.cast("string"), F.lit("+promo@"), domain)).otherwise(clean)
    return (
        F.when(row_unit < 0.003, F.lit(None))
        .when(row_unit < 0.013, _choice(_unit(seed, user, "bad"), ["n/a", "unknown", "none@", "@example.com", "john..doe@x.com"]))
        .when(row_unit < 0.11, F.upper(tagged))
        .when(row_unit < 0.16, F.concat(F.lit("  "), tagged, F.lit(" ")))
        .when(row_unit < 0.20, F.initcap(tagged))
        .otherwise(tagged)
    )


def _phone(seed: int, user: Column, row_unit: Column) -> Column:
    def digits(label: str, low: int, high: int) -> Column:
        return (F.floor(_unit(seed, user, label) * (high - low + 1)) + low).cast("string")

    area, exchange = _choice(_unit(seed, user, "area"), us_area_codes()), digits("exchange", 201, 989)
    line = F.lpad(digits("line", 0, 9999), 4, "0")
    uk = F.concat(F.lit("20 "), digits("uk1", 7000, 8999), F.lit(" "), F.lpad(digits("uk2", 0, 9999), 4, "0"))
    nanp = (
        F.when(row_unit < 0.25, F.concat(F.lit("("), area, F.lit(") "), exchange, F.lit("-"), line))
        .when(row_unit < 0.45, F.concat_ws("-", area, exchange, line))
        .when(row_unit < 0.60, F.concat(F.lit("+1 "), area, F.lit(" "), exchange, F.lit(" "), line))
        .when(row_unit < 0.75, F.concat(F.lit("1"), area, exchange, line))
        .otherwise(F.concat_ws(".", area, exchange, line))
    )
    international = F.when(row_unit < 0.5, F.concat(F.lit("+44 "), uk)).otherwise(F.concat(F.lit("0044 "), uk))
    return (
        F.when(row_unit < 0.003, F.lit(None))
        .when(row_unit < 0.013, _choice(_unit(seed, user, "badphone"), ["555-01", "n/a", "415-555-CALL", "+1 015 555 0199"]))
        .when(_unit(seed, user, "country") < 0.1, international)
        .otherwise(nanp)
    )


def _maid(seed: int, user: Column, row_unit: Column) -> Column:
    high = F.lpad(F.lower(F.hex(F.xxhash64(F.lit(seed), user, F.lit("maid-hi")))), 16, "0")
    low = F.lpad(F.lower(F.hex(F.xxhash64(F.lit(seed), user, F.lit("maid-lo")))), 16, "0")
    compact = F.concat(high, low)
    dashed = F.concat_ws("-", F.substring(compact, 1, 8), F.substring(compact, 9, 4), F.substring(compact, 13, 4),
                         F.substring(compact, 17, 4), F.substring(compact, 21, 12))
    is_ios = _unit(seed, user, "ios") < 0.5
    return (
        F.when(row_unit < 0.005, F.lit("00000000-0000-0000-0000-000000000000"))
        .when(is_ios, F.upper(dashed))  # IDFAs come upper-case from iOS
        .otherwise(dashed)
    )


def _segment_for(spec: GeneratorSpec, user: Column, slot: Column) -> Column:
    """Zipf-like rank: P(rank < x) ~ ln(x)/ln(S), redrawn on the days the slot churns."""
    epoch: Column = F.lit(1)
    for day in range(2, spec.day + 1):
        epoch = F.when(_unit(spec.seed, user, slot, day, "churn") < spec.slot_churn, F.lit(day)).otherwise(epoch)
    rank = F.floor(F.pow(F.lit(spec.segments + 1.0), _unit(spec.seed, user, slot, epoch, "segment"))) - 1
    clamped = F.least(F.greatest(rank, F.lit(0)), F.lit(spec.segments - 1)) + 1
    return F.concat(F.lit("seg_"), F.lpad(clamped.cast("string"), 4, "0"))


def _active_users(spark: SparkSession, spec: GeneratorSpec) -> DataFrame:
    shift = (spec.day - 1) * math.floor(spec.users * spec.user_churn)
    return spark.range(shift, shift + spec.users).withColumnRenamed("id", "user")


def membership(spark: SparkSession, spec: GeneratorSpec) -> DataFrame:
    seed, user = spec.seed, F.col("user")
    slots = _pick(_unit(seed, user, "slots"), [(count, w) for count, w in enumerate(SLOT_WEIGHTS, start=1)])
    rows = _active_users(spark, spec).select(user, F.explode(F.sequence(F.lit(0), slots - 1)).alias("slot"))
    slot = F.col("slot")
    row_unit = _unit(seed, user, slot, spec.day, "dirt")
    id_type = _pick(_unit(seed, user, slot, "type"), spec.id_type_mix)
    id_value = (
        F.when(id_type == "email", _email(seed, user, row_unit))
        .when(id_type == "phone", _phone(seed, user, row_unit))
        .when(id_type == "maid", _maid(seed, user, row_unit))
        .otherwise(F.concat(F.lit("crm-"), user.cast("string")))
    )
    noise = _unit(seed, user, slot, spec.day, "noise")
    day_start = F.lit("2026-01-01 00:00:00").cast("timestamp") + F.make_interval(days=F.lit(spec.day - 1))
    return rows.select(
        F.when(noise < 0.0005, F.lit(None)).otherwise(F.concat(F.lit("u"), F.lpad(user.cast("string"), 10, "0"))).alias("user_id"),
        F.when(noise > 0.9995, F.lit("fax")).otherwise(id_type).alias("id_type"),
        id_value.alias("id_value"),
        F.when((noise > 0.0005) & (noise < 0.0010), F.lit(None)).otherwise(_segment_for(spec, user, slot)).alias("segment_id"),
        (day_start + F.make_interval(secs=F.floor(_unit(seed, user, slot, "time") * 86400))).cast("timestamp").alias("updated_at"),
    ).select([F.col(f.name).cast(f.dataType) for f in MEMBERSHIP.fields])


def consent(spark: SparkSession, spec: GeneratorSpec) -> DataFrame:
    user = F.col("user")
    scope_unit = _unit(spec.seed, user, "scope")
    scope = F.when(scope_unit < 0.7, F.lit("*")).otherwise(_choice(_unit(spec.seed, user, "scope_dest"), list(spec.destinations)))
    return (
        _active_users(spark, spec)
        .filter(_unit(spec.seed, user, "consent") < spec.consent_rate)
        .select(F.concat(F.lit("u"), F.lpad(user.cast("string"), 10, "0")).alias("user_id"), scope.alias("scope"))
        .select([F.col(f.name).cast(f.dataType) for f in CONSENT.fields])
    )


def _write(frame: DataFrame, path: str, spec: GeneratorSpec) -> None:
    writer = frame.write.mode("overwrite")
    if spec.compression:
        writer = writer.option("compression", spec.compression)
    if spec.data_format == "parquet":
        writer.parquet(path)
    elif spec.data_format == "csv":
        writer.option("header", True).option("timestampFormat", "yyyy-MM-dd'T'HH:mm:ss'Z'").csv(path)
    else:
        writer.option("timestampFormat", "yyyy-MM-dd'T'HH:mm:ss'Z'").json(path)


def generate(spark: SparkSession, spec: GeneratorSpec, out: str | Path) -> dict:
    """Write `<out>/membership/`, `<out>/consent/` and `<out>/_generator.json`; return the summary."""
    out = Path(out)
    rows = membership(spark, spec)
    # ~1M rows per output file keeps files at tens of MB without a small-file explosion.
    _write(rows.repartition(max(1, math.ceil(spec.records / 1_000_000))), str(out / "membership"), spec)
    _write(consent(spark, spec).coalesce(1), str(out / "consent"), spec)
    written = spark.read.parquet(str(out / "membership")).count() if spec.data_format == "parquet" else rows.count()
    summary = {
        "spec": {**asdict(spec), "destinations": list(spec.destinations)},
        "membership": str(out / "membership"),
        "consent": str(out / "consent"),
        "rows": written,
        "users": spec.users,
    }
    (out / METADATA_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
