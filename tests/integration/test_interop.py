"""Interop with the servers' own command-line clients: what datalayer writes is what psql,
redis-cli and kcat see, byte for byte, and what they write datalayer reads (or refuses, naming
the key). Other programs share these servers; a data layer that only agrees with itself is not
enough.

The clients come from Debian's packages (``postgresql-client``, ``redis-tools``, ``kcat``),
installed through ``tests/services/debian.py`` when missing, so a fresh machine gets them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, Field

import datalayer
from datalayer import DataLayerError
from datalayer.categories import KVNamespace, Stream, TransactionalTable
from datalayer.categories.streaming.dead_letters import HEADER_ERROR, HEADER_SOURCE
from datalayer.stores.shared.postgres_urls import libpq_url
from datalayer.testing.registry import write_registry
from tests.services.debian import ensure_packages

#: Enough digits to quantize any NUMERIC(38, 10) (the default context holds 28).
WIDE = Context(prec=100)
#: Seconds any one client command may take.
TOOL_TIMEOUT = 60

#: Text no store may change: quoting, escapes, SQL, scripts, controls, combining sequences.
HOSTILE = [
    "plain",
    "it's \"quoted\" `back` ''",
    "back\\slash \\\\ \\n \\x00 \\' end\\",
    "'; DROP TABLE x; --",
    '"; DROP TABLE x; --',
    "$$; DROP TABLE x; $$",
    "x' OR '1'='1",
    "Ωmega naïve Zürich 東京 Москва",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 🇫🇷",
    "rtl \u200f\u202eabc\u202c \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "line1\nline2\r\nline3\ttab",
    "%_*?[]{}<>|&;$`",
    " leading and trailing ",
    "",
    "\u2028\u2029\ufeff zero\u200bwidth",
    "a\x01\x1f\x7f control",
    "comma,semi;pipe|colon:",
    ":name :'name' :\"name\" \\set x",
]
#: About 600 kB of the hostile text, far past any line or argument size a client may assume.
LONG = "long 😀 \u202e'\\\n\"," * 40_000

UTC_OFFSETS = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=3, minutes=30)),
    timezone(timedelta(hours=14)),
    None,  # naive: datalayer takes it as UTC
    timezone(-timedelta(hours=12)),
]


def run_tool(
    args: Sequence[str | bytes],
    *,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = TOOL_TIMEOUT,
) -> bytes:
    """Run a client and return its stdout; a failure says which client and what it printed
    (never the command line, which holds the server's password)."""
    name = Path(os.fsdecode(args[0])).name
    try:
        done = subprocess.run(
            list(args),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} did not finish within {timeout:g}s", pytrace=False)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")[-2000:]
        pytest.fail(f"{name} exited with {done.returncode}: {err}", pytrace=False)
    return done.stdout


def client(binary: str, package: str) -> str:
    """The path of a client binary, installed from its Debian package when missing."""
    ensure_packages([package], present=shutil.which(binary) is not None)
    found = shutil.which(binary)
    assert found is not None, f"{package} was installed but {binary} is not on PATH"
    return found


@pytest.fixture(scope="session")
def psql() -> str:
    return client("psql", "postgresql-client")


@pytest.fixture(scope="session")
def redis_cli() -> str:
    return client("redis-cli", "redis-tools")


@pytest.fixture(scope="session")
def kcat() -> str:
    return client("kcat", "kcat")


def open_layer(tmp_path: Path, store: dict[str, Any], patterns: dict[str, Any]) -> Any:
    return datalayer.open(write_registry(tmp_path, {"p": {"main": store}}, patterns), "p")


# --- PostgreSQL and psql ---------------------------------------------------------------------


class Account(BaseModel):
    """Every column type a transactional table maps, each given values at its edges."""

    account_id: str
    name: str
    note: str | None = None
    opened_at: datetime
    closed_at: datetime | None = None
    balance: Decimal = Field(max_digits=38, decimal_places=10)
    exact: Decimal  # unconstrained NUMERIC: every digit given is kept
    big: int
    ratio: float
    active: bool
    attrs: dict[str, str] = Field(default_factory=dict)


BALANCES = [
    Decimal("12345678901234567890123456.1234567890"),
    Decimal("-0.0000000001"),
    Decimal("0"),
    Decimal("1.5"),
    Decimal("-9999999999999999999999999999.9999999999"),
]
EXACTS = [
    Decimal("3.14159265358979323846264338327950288419716939937510582097494459"),
    Decimal("1E+30"),
    Decimal("-1E-40"),
    Decimal("0.10"),
    Decimal("123456789012345678901234567890123456789012345678901234567890"),
]
BIGS = [2**63 - 1, -(2**63), 0, 2**53 + 1, -1]
RATIOS = [0.1, 1e-300, 1.7976931348623157e308, -2.5, 5e-324]
INSTANTS = [
    datetime(2026, 3, 1, 6, 0, 0, 123456),
    datetime(1969, 7, 20, 20, 17, 40),
    datetime(2038, 1, 19, 3, 14, 8, 1),
    datetime(2024, 2, 29, 23, 59, 59, 999999),
]


def account_rows() -> list[dict[str, Any]]:
    rows = []
    for n, text in enumerate([*HOSTILE, LONG]):
        offset = UTC_OFFSETS[n % len(UTC_OFFSETS)]
        rows.append(
            {
                "account_id": text if len(text) < 200 else f"long-{n}",
                "name": text,
                "note": None if n % 3 == 0 else text[::-1],
                "opened_at": INSTANTS[n % len(INSTANTS)].replace(tzinfo=offset),
                "closed_at": None if n % 2 else datetime(2030, 1, 1, tzinfo=offset) + timedelta(n),
                "balance": BALANCES[n % len(BALANCES)],
                "exact": EXACTS[n % len(EXACTS)],
                "big": BIGS[n % len(BIGS)],
                "ratio": RATIOS[n % len(RATIOS)],
                "active": n % 2 == 0,
                "attrs": {text: text[::-1], "k": "v"} if text else {},
            }
        )
    return rows


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class Postgres:
    """A fresh database holding one transactional pattern, and psql pointed at it."""

    url: str
    table: str
    accounts: TransactionalTable
    psql_binary: str

    def psql(self, sql: str, *, stdin: bytes | None = None, zone: str = "UTC") -> bytes:
        """Run one command string (``-c``: sent as it is, psql interpolates nothing), unaligned
        and tuples only, with ``zone`` as the session's time zone."""
        return run_tool(
            [
                self.psql_binary,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                self.url,
            ],
            stdin=stdin,
            env={"PGTZ": zone, "PGCLIENTENCODING": "UTF8", "PGCONNECT_TIMEOUT": "10"},
        )

    def copy_out(self, columns: str, zone: str) -> list[list[str | None]]:
        """``COPY ... TO STDOUT`` as CSV, every value quoted, so an unquoted marker is NULL."""
        sql = (
            f'COPY (SELECT {columns} FROM "{self.table}") TO STDOUT '
            "WITH (FORMAT csv, FORCE_QUOTE *, NULL '<null>')"
        )
        text = self.psql(sql, zone=zone).decode()
        limit = csv.field_size_limit(len(text) + 1)  # a field may be as long as LONG
        try:
            return [
                [None if field == "<null>" else field for field in record]
                for record in csv.reader(io.StringIO(text, newline=""))
            ]
        finally:
            csv.field_size_limit(limit)


@pytest.fixture
def pg(postgres_database: str, psql: str, tmp_path: Path) -> Iterator[Postgres]:
    table = f"accounts_{uuid.uuid4().hex[:8]}"
    pattern = {
        "category": "transactional",
        "store": "main",
        "table": table,
        "key": "account_id",
        "schema": "tests.integration.test_interop:Account",
    }
    store = {"type": "postgres", "url": postgres_database}
    with open_layer(tmp_path, store, {"accounts": pattern}) as dl:
        dl.apply()
        yield Postgres(libpq_url(postgres_database), table, dl.transactional("accounts"), psql)


def test_rows_datalayer_puts_are_what_psql_reads(pg: Postgres, record_property: Any) -> None:
    pg.psql("CREATE TABLE x (id int PRIMARY KEY); INSERT INTO x VALUES (1)")
    rows = account_rows()
    pg.accounts.put_many(rows[: len(rows) // 2])
    for row in rows[len(rows) // 2 :]:
        pg.accounts.put(row)
    with pytest.raises(DataLayerError, match="NUL"):  # PostgreSQL text cannot hold it
        pg.accounts.put({**rows[0], "account_id": "nul", "name": "a\x00b"})

    assert pg.psql(f'SELECT count(*) FROM "{pg.table}"') == f"{len(rows)}\n".encode()
    assert pg.psql("SELECT count(*) FROM x") == b"1\n", "a value ran as SQL"
    columns = (
        "account_id, name, note, opened_at, closed_at, balance, exact, big, ratio, active, "
        "attrs, char_length(name), octet_length(name), md5(name)"
    )
    # A session in another zone renders other wall times: the same instants all the same.
    seen = {r[0]: r for r in pg.copy_out(columns, zone="Asia/Kolkata")}
    assert len(seen) == len(rows)
    for row in rows:
        got = seen[row["account_id"]]
        name, note, opened, closed, balance, exact, big, ratio, active, attrs, *sizes = got[1:]
        assert name == row["name"]
        assert note == row["note"]
        assert opened is not None and opened.endswith("+05:30")
        assert datetime.fromisoformat(opened) == as_utc(row["opened_at"])
        if row["closed_at"] is None:
            assert closed is None
        else:
            assert closed is not None
            assert datetime.fromisoformat(closed) == as_utc(row["closed_at"])
        assert balance == format(row["balance"].quantize(Decimal("1E-10"), context=WIDE), "f")
        assert exact == format(row["exact"], "f"), "an unconstrained NUMERIC keeps every digit"
        assert big is not None and int(big) == row["big"]
        assert ratio is not None and float(ratio) == row["ratio"]
        assert active == ("t" if row["active"] else "f")
        assert attrs is not None and json.loads(attrs) == row["attrs"]
        text = row["name"]
        assert sizes == [
            str(len(text)),
            str(len(text.encode())),
            hashlib.md5(text.encode()).hexdigest(),
        ]
    # A filter in psql finds each hostile value as the text it is.
    for row in rows[:5]:
        literal = "'" + row["name"].replace("'", "''") + "'"
        found = pg.psql(f'SELECT account_id FROM "{pg.table}" WHERE name = {literal}')
        assert found == (row["account_id"] + "\n").encode()
    record_property("interop_psql_rows_read", len(rows))
    record_property("interop_psql_bytes_read", sum(len(r["name"].encode()) for r in rows))


def sql_literal(value: str | None) -> str:
    """A standard SQL string literal (``standard_conforming_strings`` is set on)."""
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


#: Rows psql INSERTs, as SQL literals, with what datalayer must read back. The session's time
#: zone is America/St_Johns (UTC-03:30 in March), which a literal with no offset is in.
ST_JOHNS = ZoneInfo("America/St_Johns")
FOREIGN_TIMES = [
    ("2026-03-01 11:30:00.123456+05:30", datetime(2026, 3, 1, 6, 0, 0, 123456, UTC)),
    ("2026-03-01 06:00:00", datetime(2026, 3, 1, 6, 0, tzinfo=ST_JOHNS)),
    ("2026-07-01 12:00:00 America/New_York", datetime(2026, 7, 1, 16, 0, tzinfo=UTC)),
    ("2026-03-01T06:00:00Z", datetime(2026, 3, 1, 6, 0, tzinfo=UTC)),
    ("epoch", datetime(1970, 1, 1, tzinfo=UTC)),
    ("1969-12-31 23:59:59.999999-00", datetime(1969, 12, 31, 23, 59, 59, 999999, UTC)),
]
FOREIGN_NUMBERS = [  # balance, exact, big, ratio as psql spells them; ratio as read
    (
        "1.5",
        "3.14159265358979323846264338327950288419716939937510582097494459",
        "9223372036854775807",
        "0.1",
        0.1,
    ),
    ("-9999999999999999999999999999.9999999999", "1e30", "-9223372036854775808", "-0", -0.0),
    ("0", "0.000", "0", "1e308", 1e308),
    ("-0.0000000001", "-1e-40", "9007199254740993", "NaN", math.nan),
    ("42", "10.50", "-1", "Infinity", math.inf),
    ("1e5", "-0.10", "1", "-Infinity", -math.inf),
]


def same(got: Any, want: Any) -> bool:
    """Equal values of the same type; NaN equals NaN, and -0.0 is not 0.0."""
    if type(got) is not type(want):
        return False
    if isinstance(want, float):
        return (math.isnan(got) and math.isnan(want)) or (
            got == want and math.copysign(1, got) == math.copysign(1, want)
        )
    if isinstance(want, datetime):
        return got == want and got.tzinfo is UTC
    if isinstance(want, Decimal):
        return got == want and str(got) == str(want)
    return bool(got == want)


def assert_rows(got: dict[str, Any] | None, want: dict[str, Any]) -> None:
    assert got is not None and set(got) == set(want)
    wrong = {c: (got[c], want[c]) for c in want if not same(got[c], want[c])}
    assert not wrong, f"row {want['account_id']!r}: (read, expected) {wrong}"


def test_rows_psql_inserts_are_what_datalayer_reads(pg: Postgres, record_property: Any) -> None:
    values = []
    expected: dict[str, dict[str, Any]] = {}
    for n, text in enumerate(HOSTILE):
        time_text, instant = FOREIGN_TIMES[n % len(FOREIGN_TIMES)]
        balance, exact, big, ratio, ratio_value = FOREIGN_NUMBERS[n % len(FOREIGN_NUMBERS)]
        key = f"psql-{n}-{text}"
        note = None if n % 4 == 0 else text * 3
        attrs = {text: "v\u00e9 \U0001f600", "k": text}
        values.append(
            "("
            + ", ".join(
                [
                    sql_literal(key),
                    sql_literal(text),
                    sql_literal(note),
                    sql_literal(time_text),
                    "NULL" if n % 2 else sql_literal(time_text),
                    sql_literal(balance),
                    sql_literal(exact),
                    big,
                    sql_literal(ratio),
                    "true" if n % 2 else "'f'",
                    sql_literal(json.dumps(attrs, indent=n % 3 or None)),
                ]
            )
            + ")"
        )
        scale = Decimal("1E-10")
        expected[key] = {
            "account_id": key,
            "name": text,
            "note": note,
            "opened_at": instant.astimezone(UTC),
            "closed_at": None if n % 2 else instant.astimezone(UTC),
            "balance": Decimal(balance).quantize(scale, context=WIDE),
            "exact": Decimal(format(Decimal(exact), "f")),
            "big": int(big),
            "ratio": ratio_value,
            "active": bool(n % 2),
            "attrs": attrs,
        }
    pg.psql(
        "SET standard_conforming_strings = on; "
        f'INSERT INTO "{pg.table}" (account_id, name, note, opened_at, closed_at, balance, '
        f"exact, big, ratio, active, attrs) VALUES {', '.join(values)}",
        zone="America/St_Johns",
    )
    # The long text through COPY FROM STDIN, as a loader would send it.
    long_row = [
        "psql-long", LONG, "\n".join(HOSTILE), "2026-03-01 06:00:00+00", "", "7", "7", "7", "7",
        "t", json.dumps({"long": LONG}, ensure_ascii=False),
    ]  # fmt: skip
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerow(long_row)
    pg.psql(
        f'COPY "{pg.table}" (account_id, name, note, opened_at, closed_at, balance, exact, '
        "big, ratio, active, attrs) FROM STDIN WITH (FORMAT csv)",
        stdin=buffer.getvalue().encode(),
    )
    expected["psql-long"] = {
        "account_id": "psql-long",
        "name": LONG,
        "note": "\n".join(HOSTILE),
        "opened_at": datetime(2026, 3, 1, 6, tzinfo=UTC),
        "closed_at": None,  # an unquoted empty CSV field is NULL
        "balance": Decimal("7.0000000000"),
        "exact": Decimal("7"),
        "big": 7,
        "ratio": 7.0,
        "active": True,
        "attrs": {"long": LONG},
    }

    accounts = pg.accounts
    for key, want in expected.items():
        assert_rows(accounts.get(key), want)  # the prepared-statement path
        with accounts.transaction():
            assert_rows(accounts.get(key), want)  # through SQLAlchemy
    by_key = {r["account_id"]: r for r in accounts.query({"account_id": {"$in": list(expected)}})}
    assert set(by_key) == set(expected)
    for key, want in expected.items():
        assert_rows(by_key[key], want)
    for text in [*HOSTILE, LONG]:
        found = accounts.query({"name": text}, order_by="account_id")
        assert [r["name"] for r in found] == [text]
    ordered = accounts.query(order_by=["opened_at", "account_id"])
    instants = [r["opened_at"] for r in ordered]
    assert instants == sorted(instants)
    assert accounts.count({"big": {"$gte": 2**62}}) == sum(
        1 for w in expected.values() if w["big"] >= 2**62
    )
    assert accounts.count({"balance": {"$lt": Decimal("-0.00000000005")}}) == sum(
        1 for w in expected.values() if w["balance"] < Decimal("-0.00000000005")
    )
    record_property("interop_psql_rows_written", len(expected))


# --- Redis and redis-cli ---------------------------------------------------------------------


@dataclass
class Redis:
    url: str
    binary: str
    prefixes: tuple[str, str]
    a: KVNamespace
    b: KVNamespace

    def cli(self, *args: str | bytes) -> bytes:
        """One redis-cli command; ``--raw`` prints a reply's bytes as they are, ``-e`` makes an
        error reply fail. The password goes through the environment, not the command line."""
        url = urlsplit(self.url)
        where = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379)]
        database = url.path.strip("/") or "0"
        return run_tool(
            [self.binary, *where, "-n", database, "-e", "--raw", *args],
            env={"REDISCLI_AUTH": unquote(url.password or "")},
        )

    def number(self, *args: str | bytes) -> int:
        return int(self.cli(*args))


@pytest.fixture
def kv(redis_url: str, redis_cli: str, tmp_path: Path) -> Iterator[Redis]:
    import redis

    run = uuid.uuid4().hex[:8]
    prefixes = (f"interop-{run}-a", f"interop-{run}-b")
    patterns = {
        "a": {"category": "key-value", "store": "main", "prefix": prefixes[0]},
        "b": {"category": "key-value", "store": "main", "prefix": prefixes[1], "ttl": "1h"},
    }
    with open_layer(tmp_path, {"type": "redis", "url": redis_url}, patterns) as dl:
        yield Redis(redis_url, redis_cli, prefixes, dl.kv("a"), dl.kv("b"))
    raw = redis.Redis.from_url(redis_url)
    stale = list(raw.scan_iter(match=f"interop-{run}-*"))
    if stale:
        raw.delete(*stale)
    raw.close()


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


KV_VALUES: dict[str, Any] = {
    "plain": {"a": 1},
    "space key": "hostile 'quote' \"dq\" back\\slash",
    "quote'\"key": ["'; DROP TABLE x; --", None, True, False],
    "new\nline": {"nested": {"deep": [1, [2, [3]]]}, "text": "line1\nline2\r\n"},
    "emoji😀": "😀👍🏽👨‍👩‍👧‍👦",
    "rtl\u202eabc": "\u200f\u05e9\u05dc\u05d5\u05dd",
    "colon:in:key": 2**63 - 1,
    "*glob?[x]": -(2**63),
    "float": [0.1, 1e-300, -2.5, 1.7976931348623157e308],
    "long": LONG,
    "null": None,
    "empty-string": "",
    "controls": "\u2028\u2029\x00\x1f\x7f",
    "hostile": HOSTILE,
}


def test_values_datalayer_sets_are_what_redis_cli_reads(kv: Redis, record_property: Any) -> None:
    prefix = kv.prefixes[0]
    timed = {key for n, key in enumerate(KV_VALUES) if n % 2 == 0}
    for key, value in KV_VALUES.items():
        kv.a.set(key, value, ttl="45s" if key in timed else None)
    for key, value in KV_VALUES.items():
        full = f"{prefix}:{key}"
        assert kv.cli("GET", full) == compact(value) + b"\n", key
        assert kv.number("STRLEN", full) == len(compact(value))
        assert kv.cli("TYPE", full) == b"string\n"
        millis = kv.number("PTTL", full)
        left = kv.a.ttl(key)
        if key in timed:
            assert left is not None and 40_000 < millis <= 45_000, (key, millis)
            assert abs(left * 1000 - millis) < 1_500, (key, left, millis)
        else:
            assert (millis, left) == (-1, None), key
    assert kv.number("EXISTS", *(f"{prefix}:{k}" for k in KV_VALUES)) == len(KV_VALUES)
    # A counter datalayer adds to is an integer redis-cli sees, and the other way round.
    assert kv.a.incr("counter", 5, ttl="1m") == 5
    assert kv.number("INCRBY", f"{prefix}:counter", "3") == 8
    assert kv.a.incr("counter") == 9
    assert kv.cli("GET", f"{prefix}:counter") == b"9\n"
    assert 0 < kv.number("PTTL", f"{prefix}:counter") <= 60_000
    assert kv.a.delete("plain") and kv.number("EXISTS", f"{prefix}:plain") == 0
    record_property("interop_redis_keys_read", len(KV_VALUES) + 1)


#: Values redis-cli SETs as JSON, and what they read as.
FOREIGN_JSON: dict[str, bytes] = {
    "object": '{"a":[1,2.5,"é😀"],"b":null,"c":true}'.encode(),
    "spaced": b" [ 1 , 2 ,\n 3 ]\t",
    "string": b'"just \\"text\\" \\\\ \\n"',
    "escapes": b'"\\u00e9\\ud83d\\ude00\\u202e"',
    "number": b"42",
    "int64": b"-9223372036854775808",
    "wide-int": b"123456789012345678901234567890",
    "float": b"-0.0e-5",
    "false": b"false",
    "null": b"null",
    "hostile-key 'x'\"; DROP\n": compact(HOSTILE),
}
#: Values redis-cli SETs that are not JSON: each must be refused naming its key.
NOT_JSON: dict[str, bytes] = {
    "text": b"not json {",
    "nan": b"NaN",
    "infinity": b"Infinity",
    "minus-infinity": b"[-Infinity]",
    "bytes": b"\xff\xfe\xfd",
    "empty": b"",
    "trailing": b'{"a":1} x',
    "single-quotes": b"{'a': 1}",
    "truncated": b'{"a": [1, 2',
    "latin1": '"caf\xe9"'.encode("latin-1"),
}


def test_values_redis_cli_sets_are_what_datalayer_reads(kv: Redis, record_property: Any) -> None:
    prefix = kv.prefixes[0]
    for n, (key, raw) in enumerate(FOREIGN_JSON.items()):
        kv.cli("SET", f"{prefix}:{key}", raw, *(["PX", "60000"] if n % 2 else []))
    for n, (key, raw) in enumerate(FOREIGN_JSON.items()):
        want = json.loads(raw)
        got = kv.a.get(key)
        assert got == want and type(got) is type(want), key
        left = kv.a.ttl(key)
        if n % 2:
            assert left is not None and 55 < left <= 60, (key, left)
        else:
            assert left is None, key
    assert kv.a.mget(list(FOREIGN_JSON)) == [json.loads(v) for v in FOREIGN_JSON.values()]
    assert str(kv.a.get("float")) == "-0.0"

    for key, raw in NOT_JSON.items():
        kv.cli("SET", f"{prefix}:{key}", raw)
    refused = 0
    for key in NOT_JSON:
        for read in (lambda k: kv.a.get(k), lambda k: kv.a.mget(["object", k, "number"])):
            with pytest.raises(DataLayerError) as caught:
                read(key)
            message = str(caught.value)
            assert repr(key) in message and "'a'" in message and "not JSON" in message, message
            refused += 1
    assert kv.a.get("object") == json.loads(FOREIGN_JSON["object"]), "a refusal changed nothing"
    record_property("interop_redis_foreign_values_read", len(FOREIGN_JSON))
    record_property("interop_redis_foreign_values_refused", refused)


def test_keys_of_another_patterns_prefix_are_never_returned(
    kv: Redis, record_property: Any
) -> None:
    prefix_a, prefix_b = kv.prefixes
    names = ["k", "shared", "x:y", ":lead", "emoji😀"]
    for name in names[:2]:
        kv.a.set(name, f"a-{name}")
    near_misses = [
        *(f"{prefix_b}:{name}" for name in names),  # the other pattern's keys
        *(f"{prefix_a}{name}" for name in names if name[0] != ":"),  # no separator
        *(f"{prefix_a.upper()}:{name}" for name in names),  # another case
        *(f" {prefix_a}:{name}" for name in names),
        prefix_a,
        f"{prefix_a}:",
    ]
    for full in near_misses:
        kv.cli("SET", full, compact(f"foreign {full}"))
    assert kv.a.mget(names) == ["a-k", "a-shared", None, None, None]
    assert kv.b.mget(names) == [f"foreign {prefix_b}:{name}" for name in names]
    for name in names[2:]:
        assert kv.a.get(name) is None
        assert not kv.a.delete(name)
        with pytest.raises(KeyError):
            kv.a.ttl(name)
    assert kv.a.incr("emoji😀") == 1
    assert kv.number("EXISTS", *near_misses) == len(near_misses), "a foreign key was touched"
    assert kv.cli("GET", f"{prefix_b}:emoji😀") == compact(f"foreign {prefix_b}:emoji😀") + b"\n"
    with pytest.raises(DataLayerError, match="non-empty"):
        kv.a.get("")
    record_property("interop_redis_foreign_keys", len(near_misses))


# --- Kafka and kcat --------------------------------------------------------------------------


class Alert(BaseModel):
    """An event as a Kafka topic carries it."""

    service_id: str
    seq: int
    text: str
    at: datetime
    amount: Decimal | None = None
    score: float = 0.0


@dataclass
class Kafka:
    bootstrap: str
    binary: str
    topic: str
    dead_letter: str
    alerts: Stream

    def consume(self, topic: str, fmt: str) -> bytes:
        """Every message of ``topic`` from the beginning, in kcat's format ``fmt``; kcat
        exits at the end of the last partition (``-e``)."""
        return run_tool(
            [self.binary, "-C", "-b", self.bootstrap, "-t", topic, "-o", "beginning", "-e",
             "-q", "-f", fmt]
        )  # fmt: skip

    def produce(self, lines: Sequence[bytes]) -> None:
        """Each ``key:value`` line as one message (``-K:``: the first colon splits)."""
        run_tool(
            [self.binary, "-P", "-b", self.bootstrap, "-t", self.topic, "-K:"],
            stdin=b"\n".join(lines) + b"\n",
        )


@pytest.fixture
def kafka(kafka_bootstrap: str, kcat: str, tmp_path: Path) -> Iterator[Kafka]:
    topic = f"interop_{uuid.uuid4().hex[:8]}"
    pattern = {
        "category": "streaming",
        "store": "main",
        "topic": topic,
        "partitions": 6,
        "key": "service_id",
        "schema": "tests.integration.test_interop:Alert",
        "dead_letter": f"{topic}.dlq",
        "max_attempts": 2,
    }
    store = {
        "type": "kafka",
        "bootstrap_servers": kafka_bootstrap,
        "session_timeout": "3s",
        "delivery_timeout_ms": 10000,
    }
    with open_layer(tmp_path, store, {"alerts": pattern}) as dl:
        dl.apply()
        yield Kafka(kafka_bootstrap, kcat, topic, f"{topic}.dlq", dl.stream("alerts"))
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_topics([topic, f"{topic}.dlq"], operation_timeout=10).values():
        future.result(timeout=20)


@dataclass
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: bytes


#: kcat's format: lengths first, so keys and values may hold any byte, ``|`` and newlines too.
KCAT_FORMAT = "%p|%o|%K|%S|%k%s|%h\n"


def parse_kcat(out: bytes) -> list[Consumed]:
    """Messages printed in ``KCAT_FORMAT`` (``%K``, ``%S``: byte lengths, -1 for null)."""
    found = []
    at = 0
    while at < len(out):
        fields = []
        for _ in range(4):
            end = out.index(b"|", at)
            fields.append(int(out[at:end]))
            at = end + 1
        partition, offset, key_size, value_size = fields
        key = None if key_size < 0 else out[at : at + key_size]
        at += max(key_size, 0)
        value = out[at : at + max(value_size, 0)]
        at += max(value_size, 0)
        assert out[at : at + 1] == b"|", "kcat's output is not in KCAT_FORMAT"
        end = out.index(b"\n", at)
        found.append(Consumed(partition, offset, key, value, out[at + 1 : end]))
        at = end + 1
    return found


def alerts(keys: Sequence[str], per_key: int) -> list[dict[str, Any]]:
    events = []
    for seq in range(per_key):
        for n, key in enumerate(keys):
            i = seq * len(keys) + n
            offset = UTC_OFFSETS[i % len(UTC_OFFSETS)] or UTC
            events.append(
                {
                    "service_id": key,
                    "seq": seq,
                    "text": HOSTILE[i % len(HOSTILE)],
                    "at": datetime(2026, 3, 1, 6, 0, i % 60, i * 1000, offset),
                    "amount": None if i % 3 else Decimal("-12345678901234567890.000001"),
                }
            )
    return events


def test_messages_datalayer_publishes_are_what_kcat_consumes(
    kafka: Kafka, record_property: Any
) -> None:
    keys = ["svc-1", "svc 2", "ünï😀", "rtl\u202eabc", "quote'\"", "pipe|colon:semi;",
            "new\nline", "a" * 300, *(f"k{n}" for n in range(40))]  # fmt: skip
    events = alerts(keys, per_key=3)
    third = len(events) // 3
    stream = kafka.alerts
    placed = [
        stream.publish(e, headers={"trace": f"t{n} ünï"}) for n, e in enumerate(events[:third])
    ]
    placed += stream.publish_many(events[third : 2 * third])
    with stream.publisher() as publisher:  # librdkafka's own partitioner places these
        publisher.publish_many(events[2 * third :])
    empty_key = {"service_id": "", "seq": 0, "text": "", "at": datetime(2026, 3, 1, tzinfo=UTC)}
    placed.append(stream.publish(empty_key))
    events.append(empty_key)

    consumed = parse_kcat(kafka.consume(kafka.topic, KCAT_FORMAT))
    assert len(consumed) == len(events)
    expected = [Alert.model_validate(e).model_dump(mode="json") for e in events]
    by_body = {compact(e): e for e in expected}
    for message in consumed:
        event = by_body.get(message.value)
        assert event is not None, f"no event was published as {message.value[:200]!r}"
        assert message.key == event["service_id"].encode()
        assert message.partition == zlib.crc32(event["service_id"].encode()) % 6
        assert message.partition == stream.partition_for(event["service_id"])
    assert sorted(m.value for m in consumed) == sorted(by_body)
    deliveries = {(d.partition, d.offset) for d in placed}
    assert deliveries <= {(m.partition, m.offset) for m in consumed}
    headers = [m.headers.decode() for m in consumed if m.headers]
    assert sorted(headers) == sorted(f"trace=t{n} ünï" for n in range(third))
    order: defaultdict[bytes | None, list[int]] = defaultdict(list)
    for message in sorted(consumed, key=lambda m: (m.partition, m.offset)):
        order[message.key].append(json.loads(message.value)["seq"])
    assert all(seqs == sorted(seqs) for seqs in order.values()), "a key's order changed"
    record_property("interop_kafka_messages_to_kcat", len(consumed))
    record_property("interop_kafka_partitions_used", len({m.partition for m in consumed}))


def test_messages_kcat_produces_are_what_datalayer_consumes(
    kafka: Kafka, record_property: Any
) -> None:
    keys = ["k1", "k 2", "ünï😀", "rtl\u202eabc", "quote'\"", "pipe|semi;", "a" * 300,
            *(f"key-{n}" for n in range(40))]  # fmt: skip
    events = alerts(keys, per_key=3)
    lines = []
    for n, event in enumerate(events):
        body = Alert.model_validate(event).model_dump(mode="json")
        text = json.dumps(body, ensure_ascii=n % 2 == 0, indent=None, separators=(", ", " : "))
        lines.append(f"{event['service_id']}:{text}".encode())
    kafka.produce(lines)

    group = f"interop-{uuid.uuid4().hex[:8]}"
    messages = []
    for message in kafka.alerts.consume(group, max_messages=len(events), idle_timeout=15):
        messages.append(message)
        message.ack()
    assert len(messages) == len(events)
    expected = [Alert.model_validate(e).model_dump(mode="json") for e in events]
    assert sorted(compact(m.value) for m in messages) == sorted(compact(e) for e in expected)
    stream = kafka.alerts
    for message in messages:
        assert message.key == message.value["service_id"]
        assert message.partition == stream.partition_for(message.key), (
            "kcat (librdkafka's consistent_random) and datalayer put a key on different partitions"
        )
    order: defaultdict[str | None, list[int]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        order[message.key].append(message.value["seq"])
    assert all(seqs == list(range(3)) for seqs in order.values()), order
    record_property("interop_kafka_messages_from_kcat", len(messages))


def test_a_message_kcat_produces_that_is_not_json_is_dead_lettered(
    kafka: Kafka, record_property: Any
) -> None:
    def good(seq: int) -> bytes:
        return b"k:" + compact(
            {"service_id": "k", "seq": seq, "text": "ok", "at": "2026-03-01T06:00:00Z"}
        )

    bad = [
        b"k:not json {",
        b'k:{"service_id":"k","seq":3,"text":"t","at":"2026-03-01T06:00:00Z","score":NaN}',
        b'k:{"service_id":"k","seq":4,"text":"t","at":"2026-03-01T06:00:00Z","score":-Infinity}',
        b'k:{"service_id":"k","seq":"five","text":"t","at":"2026-03-01T06:00:00Z"}',
        b"k:\xff\xfe not utf-8",
        b"k:",
    ]
    kafka.produce([good(1), *bad, good(8)])
    group = f"interop-{uuid.uuid4().hex[:8]}"
    handled: list[int] = []
    started = time.monotonic()
    stats = kafka.alerts.process(lambda m: handled.append(m.value["seq"]), group, idle_timeout=2)
    assert handled == [1, 8], stats.errors
    assert (stats.handled, stats.dead_lettered, stats.retried) == (2, len(bad), 0), stats
    assert time.monotonic() - started < 60

    letters = list(kafka.alerts.dead_letters(idle_timeout=2))
    assert len(letters) == len(bad)
    for letter, line in zip(sorted(letters, key=lambda m: m.offset), bad, strict=True):
        assert letter.key == "k"
        raw = line[2:]
        assert letter.value == (json.loads(raw) if b'"five"' in raw else raw)
        error = letter.headers[HEADER_ERROR]
        assert ("seq" if b"five" in raw else "not JSON") in error, (raw, error)
        assert letter.headers[HEADER_SOURCE].startswith(f"{kafka.topic}/")
    # The dead-letter topic as kcat sees it: the same bytes, the error in a header.
    seen = parse_kcat(kafka.consume(kafka.dead_letter, KCAT_FORMAT))
    assert [m.value for m in sorted(seen, key=lambda m: m.offset)] == [line[2:] for line in bad]
    assert all(f"{HEADER_ERROR}=".encode() in m.headers for m in seen)

    # The group moved on: only what comes next is handled.
    again = kafka.alerts.process(lambda m: handled.append(m.value["seq"]), group, idle_timeout=2)
    assert (again.handled, again.dead_lettered) == (0, 0)
    kafka.produce([good(9)])
    last = kafka.alerts.process(lambda m: handled.append(m.value["seq"]), group, idle_timeout=2)
    assert (last.handled, last.dead_lettered, handled) == (1, 0, [1, 8, 9])
    record_property("interop_kafka_dead_lettered", stats.dead_lettered)
