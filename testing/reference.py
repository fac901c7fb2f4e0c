"""A plain-Python reference of the prepare semantics, written separately from the Spark code.

Integration tests run `prepare` on generated data and compare its batches and accounting with
what this module computes row by row with `re`, `hashlib` and libphonenumber (`phonenumbers`).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict

from audience_relay.transforms.phone_regions import library_e164, region_for_country_code

WS = re.compile(r"[\s\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]+")
LOCAL_SYMBOLS = set("!#$%&'*+/=?^_`{|}~-")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KNOWN = {"email", "phone", "maid", "external_id"}


def _letter_mark_or_digit(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


def _valid_domain(domain: str) -> bool:
    *labels, top = domain.split(".")
    if not labels:
        return False
    for label in labels:
        if not (1 <= len(label) <= 63 and label[0] != "-" and label[-1] != "-" and all(_letter_mark_or_digit(c) or c == "-" for c in label)):
            return False
    spelled = 2 <= len(top) <= 63 and unicodedata.category(top[0])[0] == "L" and all(unicodedata.category(c)[0] in "LM" for c in top)
    return spelled or re.fullmatch(r"xn--[a-z0-9-]{1,59}", top) is not None


def valid_email(email: str) -> bool:
    """RFC 6531 addresses without quoted local parts or address literals, at most 254 characters."""
    if len(email) > 254 or WS.search(email) or email.count("@") != 1:
        return False
    local, domain = email.split("@")
    atoms_ok = all(atom and all(_letter_mark_or_digit(c) or c in LOCAL_SYMBOLS for c in atom) for atom in local.split("."))
    gmail_account_left = domain not in ("gmail.com", "googlemail.com") or local.split("+", 1)[0].replace(".", "") != ""
    return atoms_ok and _valid_domain(domain) and gmail_account_left


def blank(value) -> bool:
    return value is None or WS.sub("", value) == ""


def strip(value: str) -> str:
    return re.sub(f"^{WS.pattern}|{WS.pattern}$", "", value)


def normalize(row: dict, country: str = "1") -> tuple[str | None, str | None, str | None]:
    """(id_type, normalized value, reject reason) for one raw row."""
    id_type = row["id_type"].strip().lower() if row["id_type"] is not None else None
    value = row["id_value"]
    if any("\ufffd" in (row[c] or "") for c in ("user_id", "id_type", "id_value", "segment_id")):
        return id_type, None, "invalid_encoding"
    if blank(row["user_id"]):
        return id_type, None, "missing_user_id"
    if len(strip(row["user_id"])) > 256:
        return id_type, None, "invalid_user_id"
    if blank(row["segment_id"]):
        return id_type, None, "missing_segment_id"
    if blank(row["id_type"]):
        return id_type, None, "missing_id_type"
    if id_type not in KNOWN:
        return id_type, None, "unknown_id_type"
    if blank(value):
        return id_type, None, "missing_id_value"
    if id_type == "email":
        email = strip(value).lower()
        return (id_type, email, None) if valid_email(email) else (id_type, None, "invalid_email")
    if id_type == "phone":
        e164 = library_e164(strip(value), region_for_country_code(country))
        return (id_type, e164, None) if e164 else (id_type, None, "invalid_phone")
    if id_type == "maid":
        maid = WS.sub("", value).lower()
        if re.fullmatch(r"[0-9a-f]{32}", maid):
            maid = "-".join([maid[:8], maid[8:12], maid[12:16], maid[16:20], maid[20:]])
        if not UUID.fullmatch(maid):
            return id_type, None, "invalid_maid"
        if maid == "00000000-0000-0000-0000-000000000000":
            return id_type, None, "zero_maid"
        return id_type, maid, None
    external = value.strip()
    return (id_type, external, None) if len(external) <= 256 else (id_type, None, "invalid_external_id")


def match_key(id_type: str, value: str, rule) -> str:
    if id_type == "phone" and not rule.phone_with_plus:
        value = value[1:]
    if id_type == "email" and rule.gmail_canonical:
        local, domain = value.rsplit("@", 1)
        if domain in ("gmail.com", "googlemail.com"):
            value = local.split("+", 1)[0].replace(".", "") + "@" + domain
    return hashlib.sha256(value.encode()).hexdigest() if rule.hash_sha256 else value


def _blocked(consent: list[dict], config) -> dict[str, set]:
    """Per destination, the users whose consent rows opt them out of it."""
    blocked = defaultdict(set)
    ids = [d.id for d in config.active_destinations]
    for c in consent:
        scope = c["scope"].strip()
        for d in ids:
            if scope in ("*", d):
                blocked[d].add(c["user_id"].strip())
    return blocked


def consent_signal(value) -> str | None:
    """A consent column's value as the contract reads it: `granted`, `denied`, another word, or None (blank)."""
    return value.strip().lower() or None if isinstance(value, str) else None


def _consent_reason(row: dict, columns: tuple[str, ...]) -> str | None:
    return "invalid_consent" if any(consent_signal(row.get(c)) not in (None, "granted", "denied") for c in columns) else None


def member_consent(rows: list[dict], opt_outs: list[dict], config) -> dict[str, dict]:
    """Per destination that reads consent from the input: {(audience, id_type, key): (ad_user_data,
    ad_personalization)}, a member denying a signal if any of its rows does and granting it only if all do."""
    result, blocked = {}, _blocked(opt_outs, config)
    country = config.defaults.default_country_code
    for destination_id, columns in config.consent_sources().items():
        destination = next(d for d in config.active_destinations if d.id == destination_id)
        audience_of = {s: a for a, segs in destination.audiences.items() for s in segs}
        given = defaultdict(list)
        for row in rows:
            id_type, value, reason = normalize(row, country)
            if (reason or _consent_reason(row, config.consent_columns) or id_type not in destination.accepted_id_types
                    or row["user_id"].strip() in blocked[destination_id]):
                continue
            audience = audience_of.get(row["segment_id"].strip())
            if audience is not None:
                key = (audience, id_type, match_key(id_type, value, destination.identifier_rule(id_type)))
                given[key].append(tuple(consent_signal(row.get(columns[s])) if s in columns else None
                                        for s in ("ad_user_data", "ad_personalization")))
        result[destination_id] = {
            key: tuple("denied" if "denied" in said else "granted" if all(v == "granted" for v in said) else None
                       for said in zip(*values))
            for key, values in given.items()}
    return result


def members(rows: list[dict], consent: list[dict], config) -> tuple[dict, dict]:
    """Per destination: {(audience, id_type, key): rows} and the row accounting."""
    result, accounting, _ = members_and_withdrawn(rows, consent, config)
    return result, accounting


def members_and_withdrawn(rows: list[dict], consent: list[dict], config) -> tuple[dict, dict, dict]:
    """`members`, and per destination the member keys of the rows consent removed."""
    blocked = _blocked(consent, config)
    normalized = [(row, id_type, value, reason or _consent_reason(row, config.consent_columns))
                  for row in rows for id_type, value, reason in [normalize(row, config.defaults.default_country_code)]]
    result, accounting, withdrawn = {}, {}, {}
    for destination in config.active_destinations:
        audience_of = {s: a for a, segs in destination.audiences.items() for s in segs}
        held = Counter()
        counts = Counter()
        withdrawn[destination.id] = set()
        for row, id_type, value, reason in normalized:
            if reason:
                counts[f"rejected:{reason}"] += 1
            elif id_type not in destination.accepted_id_types:
                counts["rejected:id_type_not_accepted"] += 1
            elif row["segment_id"].strip() not in audience_of:
                counts["unmapped"] += 1
            elif row["user_id"].strip() in blocked[destination.id]:
                counts["consent_filtered"] += 1
                withdrawn[destination.id].add(
                    (audience_of[row["segment_id"].strip()], id_type, match_key(id_type, value, destination.identifier_rule(id_type))))
            else:
                key = (audience_of[row["segment_id"].strip()], id_type, match_key(id_type, value, destination.identifier_rule(id_type)))
                held[key] += 1
        result[destination.id] = held
        accounting[destination.id] = counts
    return result, accounting, withdrawn


def delta(current: dict, previous: set, sync_mode: str, min_size: int, withdrawn: set = frozenset()) -> dict[str, set]:
    """Expected adds and removes of one destination, given the committed snapshot keys; a
    withdrawn member (consent) is removed in every mode and from guarded audiences too."""
    sizes = Counter(audience for audience, _, _ in current)
    guarded = {a for a in sizes if sizes[a] < min_size} | {a for a, _, _ in previous if sizes[a] < min_size}
    adds = {k for k in current if k not in previous and k[0] not in guarded}
    removes = set()
    if sync_mode == "mirror":
        removes = {k for k in previous if k not in current and k[0] not in guarded}
    removes |= {k for k in previous if k not in current and k in withdrawn}
    return {"add": adds, "remove": removes}
