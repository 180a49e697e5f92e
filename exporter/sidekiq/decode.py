"""Pure decoders of what Sidekiq keeps in Redis: reply shapes, job JSON, timestamps (s or ms),
process hashes, work entries, metric hashes and histograms, sidekiq-cron's sets and job hashes,
and each reader section's slice.

Bad data never raises: it becomes a `Skip` with a reason, counted. Talks to no Redis. A `Memo`
keeps for one poll what a decoder made of each exact reply (the same value, in less time).
Section numbers (§) refer to `docs/redis-layout.md`.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from redis.exceptions import ResponseError

from exporter.model import (
    HISTOGRAM_BUCKETS,
    ClassMinute,
    CronJobSample,
    ProcessSample,
    QueueSample,
    RunningJob,
)

K = TypeVar("K")
V = TypeVar("V")

# Skip reasons: the values of `sidekiq_exporter_skipped_items_total{reason}`.
INVALID_JOB = "invalid_job"  # queue tail that is not a JSON object, or a bad timestamp in it
INVALID_PROCESS = "invalid_process"  # process hash whose `info` or numeric fields don't parse
INVALID_WORK = "invalid_work"  # work-hash value that is empty or doesn't parse
INVALID_METRIC = "invalid_metric"  # `j|` field or histogram that doesn't parse
INVALID_CRON_JOB = "invalid_cron_job"  # sidekiq-cron job hash whose last_enqueue_time doesn't parse
WRONG_TYPE = "wrong_type"  # a key that holds another Redis type (WRONGTYPE)
COMMAND_ERROR = "command_error"  # any other error reply to a single command
INVALID_COUNTER = "invalid_counter"  # a counter key (`stat:processed`) not a whole number ≥ 0
INVALID_TIMESTAMP = "invalid_timestamp"  # a time from Redis outside PLAUSIBLE_SECONDS
# Every reason above: the decoders' share of `sidekiq_exporter_skipped_items_total{reason}`.
REASONS = (
    INVALID_JOB,
    INVALID_PROCESS,
    INVALID_WORK,
    INVALID_METRIC,
    INVALID_CRON_JOB,
    INVALID_COUNTER,
    INVALID_TIMESTAMP,
    WRONG_TYPE,
    COMMAND_ERROR,
)

# Sidekiq 8 writes job timestamps as integer epoch milliseconds, older versions as float epoch
# seconds. An integer below 1e11 is taken as seconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MILLISECONDS_THRESHOLD = 100_000_000_000
# Epoch seconds a time read from Redis may take: from 2001-09-09 (1e9 s) to the year 5138
# (1e11 s, the milliseconds threshold above). Sidekiq appeared in 2012; a job enqueued, a
# process started or a sorted-set score outside is bad data, and taken as it is it would make
# an age of up to 1e308 s. Outside, the time is skipped and counted.
PLAUSIBLE_SECONDS = (1e9, 1e11)
# Redis integers are signed 64-bit. A larger number is nothing Redis or Sidekiq wrote, and could
# not be exported either (the exposition converts to float: "int too large to convert").
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int64(value: int) -> int | None:
    """`value` if it fits a signed 64-bit integer, else None."""
    return value if _INT64_MIN <= value <= _INT64_MAX else None


@dataclass(frozen=True, slots=True)
class Skip:
    """An item that could not be used, and the reason it is counted under."""

    reason: str


def _as_text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _label_text(value: str) -> str:
    """A string from job or process JSON, fit to be a label value: a lone UTF-16 surrogate
    (JSON's `"\\ud800"`, which Python decodes as is) cannot be written as UTF-8 and would fail
    the whole /metrics render, so it becomes U+FFFD, as invalid bytes in a key name do."""
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def parse_int(raw: bytes | str | None, default: int = 0) -> int | None:
    """Integer text as Sidekiq writes it (`"5"`); `default` when absent, None when malformed."""
    if raw is None:
        return default
    try:
        return _int64(int(raw))
    except ValueError:
        try:
            value = float(raw)  # tolerate "5.0" from non-Ruby producers
        except ValueError:
            return None
        return _int64(int(value)) if math.isfinite(value) else None


def parse_float(raw: bytes | str | None) -> float | None:
    """Float text as Ruby's `Float#to_s` writes it; None when absent or malformed."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def plausible_time(seconds: float) -> float | Skip:
    """`seconds` if it is a plausible epoch time (PLAUSIBLE_SECONDS), else a Skip."""
    low, high = PLAUSIBLE_SECONDS
    return seconds if low <= seconds < high else Skip(INVALID_TIMESTAMP)


def payload_timestamp(value: object) -> float | Skip | None:
    """Epoch seconds from a job timestamp (`enqueued_at`, `created_at`, …), per field per job.

    Sidekiq ≤ 7.3 writes a Float of seconds; 8.0+ an Integer of milliseconds, and its own rule
    is `is_a?(Float)` (v8.0.0 lib/sidekiq/api.rb:280-289). `json.loads` keeps that distinction:
    a token with `.` or an exponent becomes a float. None when the field is absent; a Skip when
    it is not a number (`invalid_job`) or not a plausible time (`invalid_timestamp`).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return Skip(INVALID_JOB)
    if isinstance(value, float):
        return plausible_time(value) if math.isfinite(value) else Skip(INVALID_JOB)
    if isinstance(value, int):
        if _int64(value) is None:
            return Skip(INVALID_JOB)
        return plausible_time(value / 1000.0 if value >= _MILLISECONDS_THRESHOLD else float(value))
    return Skip(INVALID_JOB)


def job_class(job: Mapping[str, Any]) -> str | None:
    """The class Sidekiq's metrics and Web UI show: `wrapped` (ActiveJob) if set, else `class`."""
    for field_name in ("wrapped", "class"):
        value = job.get(field_name)
        if isinstance(value, str) and value:
            return _label_text(value)
    return None


_DECODER = json.JSONDecoder()


def _load_object(raw: bytes | str) -> dict[str, Any] | None:
    # Every queue tail and work entry goes through here (1,500 a poll on the 1,000-queue /
    # 100-process benchmark fixture). For such small objects `json.loads` spends ~40 % outside
    # the scanner (encoding detection for bytes, two whitespace regex matches), so try the
    # scanner on the UTF-8 text directly; anything it does not consume whole (whitespace
    # around the value, another encoding, bad JSON) takes `json.loads`, with the same result.
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        value, end = _DECODER.raw_decode(text)
        if end == len(text):
            return value if isinstance(value, dict) else None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        pass
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def oldest_job_timestamp(raw: bytes | None) -> float | Skip | None:
    """Latency reference of a queue's oldest job: `enqueued_at`, else `created_at` (8.1.1+ rule).

    None for an empty queue or a job with neither field: Sidekiq reports latency 0 then.
    """
    if raw is None:
        return None
    job = _load_object(raw)
    if job is None:
        return Skip(INVALID_JOB)
    # `created_at` only when `enqueued_at` is absent (an invalid one is a Skip, not a fallback).
    # One lookup and one call in the common case: this runs once per queue and poll.
    value = job.get("enqueued_at")
    return payload_timestamp(job.get("created_at") if value is None else value)


def _capacity_by_queue(info: Mapping[str, Any], concurrency: int) -> dict[str, int] | None:
    """Threads able to serve each queue, from `capsules` (8.0.9+) or `queues` (all versions)."""
    capsules = info.get("capsules")
    if isinstance(capsules, dict) and len(capsules) > 1:
        # Several capsules (7.0+): each serves its own queues with its own threads. The
        # capsule concurrency is the boot-time value (`info` is cached); with one capsule the
        # live process concurrency (8.1.2+ hash field) is the better number, used below.
        capacity: dict[str, int] = {}
        for capsule in capsules.values():
            if not isinstance(capsule, dict):
                return None
            threads = capsule.get("concurrency")
            weights = capsule.get("weights")
            if not isinstance(threads, int) or _int64(threads) is None:
                return None
            if not isinstance(weights, dict):
                return None
            for queue in weights:
                name = _label_text(str(queue))
                capacity[name] = capacity.get(name, 0) + threads
        return capacity
    queue_names: list[str] = []
    if isinstance(capsules, dict) and capsules:
        (capsule,) = capsules.values()
        if isinstance(capsule, dict) and isinstance(capsule.get("weights"), dict):
            queue_names = [_label_text(str(q)) for q in capsule["weights"]]
    if not queue_names:
        queues = info.get("queues", [])
        if not isinstance(queues, list):
            return None
        queue_names = [_label_text(str(q)) for q in queues]
    return dict.fromkeys(queue_names, concurrency)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What a process hash's `info` and `concurrency` fields tell: they change when the process
    restarts (8.1.2+: when its concurrency changes), not at every beat."""

    concurrency: int
    hostname: str
    tag: str
    version: str
    start_timestamp: float  # 0.0: absent, unknown
    start_skip: Skip | None  # `started_at` is not a plausible time
    capacity: dict[str, int] | None  # None: malformed `capsules` or `queues`


def process_info(info_raw: bytes, concurrency_raw: bytes | None) -> ProcessInfo | Skip:
    """The `info` JSON and `concurrency` field of a process hash; a Skip when malformed."""
    info = _load_object(info_raw)
    if info is None:
        return Skip(INVALID_PROCESS)
    # 8.1.2 moved `concurrency` out of `info` into its own hash field, refreshed every beat.
    if concurrency_raw is not None:
        concurrency = parse_int(concurrency_raw)
    else:
        info_concurrency = info.get("concurrency", 0)
        concurrency = _int64(info_concurrency) if isinstance(info_concurrency, int) else None
    started_at = info.get("started_at")
    if (
        concurrency is None
        or isinstance(started_at, bool)
        or not isinstance(started_at, int | float | None)
        or (isinstance(started_at, int) and _int64(started_at) is None)
        or (isinstance(started_at, float) and not math.isfinite(started_at))
    ):
        return Skip(INVALID_PROCESS)
    # Ruby's `Time.now.to_f` in every version; absent: unknown (0).
    checked = plausible_time(started_at) if started_at is not None else None
    hostname, tag, version = info.get("hostname"), info.get("tag"), info.get("version")
    return ProcessInfo(
        concurrency=concurrency,
        hostname=_label_text(hostname) if isinstance(hostname, str) else "",
        tag=_label_text(tag) if isinstance(tag, str) else "",
        version=_label_text(version) if isinstance(version, str) else "",
        start_timestamp=float(started_at or 0.0),
        start_skip=checked if isinstance(checked, Skip) else None,
        capacity=_capacity_by_queue(info, concurrency),
    )


def decode_process(
    identity: str, fields: Sequence[bytes | None], infos: InfoMemo | None = None
) -> ProcessSample | Skip | None:
    """One process from `HMGET <id> info concurrency busy beat quiet rss rtt_us`; through
    `infos`, an `info` read as before is not decoded again.

    None when `info` is missing: the hash expired and the `processes` member is stale (§5.5),
    which Sidekiq's own `ProcessSet#each` also skips.
    """
    info_raw, concurrency_raw, busy_raw, beat_raw, quiet_raw, rss_raw, rtt_raw = fields
    if info_raw is None:
        return None
    key = (info_raw, concurrency_raw)
    if infos is not None and key in infos.previous:
        info = infos.previous[key]
    else:
        info = process_info(info_raw, concurrency_raw)
    if infos is not None:
        infos.current[key] = info
    busy = parse_int(busy_raw)
    rss_kib = parse_int(rss_raw)
    rtt_us = parse_int(rtt_raw)
    beat = parse_float(beat_raw)
    if isinstance(info, Skip) or busy is None or rss_kib is None or rtt_us is None or beat is None:
        return Skip(INVALID_PROCESS)
    # Ruby's `Time.now.to_f` in every version, like `started_at`.
    if isinstance(checked := plausible_time(beat), Skip):
        return checked
    if info.start_skip is not None:
        return info.start_skip
    if info.capacity is None:
        return Skip(INVALID_PROCESS)
    return ProcessSample(
        identity=identity,
        hostname=info.hostname,
        tag=info.tag,
        version=info.version,
        concurrency=info.concurrency,
        busy=busy,
        heartbeat_timestamp=beat,
        start_timestamp=info.start_timestamp,
        # 6.4.0/6.4.1 hand the raw boolean to redis-rb 4.x, which stores "true"/"false" too.
        quiet=quiet_raw == b"true",
        rss_bytes=rss_kib * 1024,  # `rss` is KiB (VmRSS)
        redis_rtt_seconds=rtt_us / 1_000_000,  # `rtt_us` is microseconds
        # Shared with the samples of other polls through `infos`: never to be changed.
        queue_capacity=info.capacity,
    )


def decode_work_entry(identity: str, raw: bytes) -> RunningJob | Skip:
    """One work-hash value: `{"queue":…, "payload":"<job JSON>", "run_at": <int seconds>}`."""
    entry = _load_object(raw) if raw else None
    if entry is None:
        return Skip(INVALID_WORK)
    queue, payload, run_at = entry.get("queue"), entry.get("payload"), entry.get("run_at")
    # Since 6.0.2 the payload is a JSON string nested in the JSON (double-encoded); before, an
    # object. Accept both.
    job = _load_object(payload) if isinstance(payload, str) else payload
    if not isinstance(queue, str) or not isinstance(job, dict):
        return Skip(INVALID_WORK)
    klass = job_class(job)
    # `run_at` is integer seconds in every version, 8.x included; the shared rule still guards
    # against a producer that writes milliseconds.
    started = payload_timestamp(run_at)
    if klass is None or started is None or isinstance(started, Skip):
        if started == Skip(INVALID_TIMESTAMP) and klass is not None:
            return started
        return Skip(INVALID_WORK)
    return RunningJob(
        process_identity=identity, queue=_label_text(queue), job_class=klass, run_at=started
    )


def decode_metrics_fields(fields: Mapping[bytes, bytes]) -> tuple[dict[str, list[int]], int]:
    """A `j|…` hash as class → [executions, failures, milliseconds], plus malformed field count.

    Fields are `<class>|p`, `<class>|f` and `<class>|ms` (§6.2); absent ones count as 0.
    """
    by_class: dict[str, list[int]] = {}
    malformed = 0
    for raw_field, raw_value in fields.items():
        klass, _, metric = _as_text(raw_field).rpartition("|")
        slot = {"p": 0, "f": 1, "ms": 2}.get(metric)
        value = parse_int(raw_value)
        if not klass or slot is None or value is None or value < 0:
            malformed += 1
            continue
        by_class.setdefault(klass, [0, 0, 0])[slot] = value
    return by_class, malformed


EMPTY_HISTOGRAM: tuple[int, ...] = (0,) * HISTOGRAM_BUCKETS
_BIG_ENDIAN_U16S = struct.Struct(f">{HISTOGRAM_BUCKETS}H")
_HISTOGRAM_BYTES = _BIG_ENDIAN_U16S.size


def decode_histogram_bytes(raw: bytes | None) -> tuple[int, ...] | Skip:
    """`GET key` of a histogram string → 26 big-endian u16 counts (missing bytes are 0).

    Redis BITFIELD numbers bits from the most significant bit of byte 0, so the u16 at `#i`
    is bytes 2i and 2i+1 read big-endian; reading past the end gives 0 (redis.io BITFIELD).
    """
    if raw is None:
        return EMPTY_HISTOGRAM
    if not isinstance(raw, bytes) or len(raw) > 2 * HISTOGRAM_BUCKETS + 64:
        # BITFIELD grows the string only up to the highest bucket used (2 bytes for a class
        # whose jobs all took < 20 ms, 52 at most); a much longer one is not a histogram.
        return Skip(INVALID_METRIC)
    # One C call instead of 26 slices: ~1 µs less per histogram (6,000 a poll at 2,000 classes).
    return _BIG_ENDIAN_U16S.unpack_from(raw.ljust(_HISTOGRAM_BYTES, b"\0"))


def cron_enqueue_time(raw: bytes | None) -> float | Skip | None:
    """Epoch seconds from a sidekiq-cron `last_enqueue_time`; None when empty (never enqueued).

    An enqueue writes `%Y-%m-%d %H:%M:%S %z` (`2025-02-14 08:00:00 +0000`); a 1.x `save` of a
    job loaded from Redis writes Ruby's `Time#to_s` (`2025-02-14 08:00:00 UTC`). sidekiq-cron
    falls back to `DateTime.parse`, so ISO 8601 is taken too, and a time without zone is UTC.
    """
    text = _as_text(raw).strip() if raw is not None else ""
    if not text:
        return None
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    elif len(text) > 6 and text[-6] == " " and text[-5] in "+-":
        text = text[:-6] + text[-5:]  # ISO 8601 has no space before the offset
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return Skip(INVALID_CRON_JOB)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return plausible_time(moment.timestamp())


def decode_cron_job(
    namespace: str, name: str, fields: Sequence[bytes | None]
) -> CronJobSample | Skip | None:
    """One job from `HMGET <job key> status cron last_enqueue_time`; None when the hash is gone
    (a set member whose job was deleted, as sidekiq-cron's `Job.all` skips it)."""
    status, cron, last_enqueue = fields
    if status is None and cron is None and last_enqueue is None:
        return None
    enqueued = cron_enqueue_time(last_enqueue)
    if isinstance(enqueued, Skip):
        return enqueued
    return CronJobSample(
        namespace=namespace,
        name=name,
        # sidekiq-cron: `enabled?` is `status == "enabled"`, and a missing status is "enabled".
        enabled=status is None or status == b"enabled",
        cron=_as_text(cron) if cron is not None else "",
        last_enqueue_timestamp=enqueued,
    )


# --------------------------------------------------------------------------- replies
# Whole replies as `exporter.resp.round_trip` returns them: RESP2 or RESP3 shapes as hiredis
# builds them, error replies as `ResponseError` values. Each reader section hands its slice of
# replies to one of these; what cannot be used is counted in a `Skipped`, never raised.


class Memo(Generic[K, V]):
    """What a pure decoder made of each input in the last poll, by the exact input (reply
    bytes): a queue's oldest job, a running job's work entry or a past minute's metrics read
    again, as they mostly are from poll to poll, are not decoded again. The value is the one
    the decoder would return, so nothing changes but the time. One poll deep (call `next_poll`
    before each): it holds what the previous poll read, never more."""

    __slots__ = ("current", "previous")

    def __init__(self) -> None:
        self.previous: dict[K, V] = {}
        self.current: dict[K, V] = {}

    def next_poll(self) -> None:
        self.previous, self.current = self.current, {}

    def settle(self) -> None:
        """The poll is over: its own entries are all the next one can use."""
        self.previous = {}


# A `j|…` hash's fields (RESP2's flat reply) → its classes and how many fields were malformed.
MetricsMemo = Memo[tuple[object, ...], tuple[dict[str, list[int]], int] | None]


# A minute's histogram replies (`GET` each) → its classes, when none was skipped; with the
# minute's decoded hash, which must be the very same dict (`metrics_hash` through its memo).
MinuteMemo = Memo[tuple[object, ...], tuple[Mapping[str, list[int]], tuple[ClassMinute, ...]]]


def _hashable(items: Sequence[object]) -> tuple[object, ...] | None:
    """`items` as a memo key; None if one cannot be hashed (no reply of Redis's, but bad data
    must not raise)."""
    key = tuple(items)
    try:
        hash(key)
    except TypeError:
        return None
    return key


# A process hash's `info` and `concurrency` fields → what they tell.
InfoMemo = Memo[tuple[bytes, bytes | None], ProcessInfo | Skip]
# A queue's oldest job (`LINDEX -1`; nil for an empty queue) → its timestamp.
TailMemo = Memo[bytes | None, float | Skip | None]
# A process identity and one value of its work hash → the running job.
WorkMemo = Memo[tuple[str, bytes], RunningJob | Skip]


@dataclass(slots=True)
class Memos:
    """The memos of one reader, one per decoder that repeats."""

    tails: TailMemo = field(default_factory=Memo)
    work: WorkMemo = field(default_factory=Memo)
    infos: InfoMemo = field(default_factory=Memo)
    metrics: MetricsMemo = field(default_factory=Memo)
    minutes: MinuteMemo = field(default_factory=Memo)

    def next_poll(self) -> None:
        for memo in self._all():
            memo.next_poll()

    def settle(self) -> None:
        for memo in self._all():
            memo.settle()

    def _all(self) -> tuple[Memo[Any, Any], ...]:
        return (self.tails, self.work, self.infos, self.metrics, self.minutes)


# The debug log names the keys of the first few items skipped in a poll; the counter counts all.
MAX_SKIPPED_KEYS = 10


class Skipped(Counter[str]):
    """Items skipped while decoding one poll's replies, by reason; and the Redis keys of the
    first MAX_SKIPPED_KEYS of them with their reasons (for the debug log, never a value)."""

    def __init__(self) -> None:
        super().__init__()
        self.examples: list[tuple[str, str]] = []  # (reason, key)

    def add(self, reason: str, key: str = "", count: int = 1) -> None:
        """Count `count` items skipped for `reason`, read from `key` ("": no key to name)."""
        self[reason] += count
        if key and len(self.examples) < MAX_SKIPPED_KEYS:
            self.examples.append((reason, key))

    def error(self, reply: object, key: str = "") -> bool:
        """True (and counted) when `reply` is an error reply rather than a value."""
        if isinstance(reply, ResponseError):
            self.add(WRONG_TYPE if str(reply).startswith("WRONGTYPE") else COMMAND_ERROR, key)
            return True
        return False

    def skip(self, item: object, key: str = "") -> bool:
        """True (and counted) when a decoder returned a `Skip`."""
        if isinstance(item, Skip):
            self.add(item.reason, key)
            return True
        return False


def key_of(command: Sequence[object]) -> str:
    """The key a command reads (its first argument), as text."""
    key = command[1] if len(command) > 1 else command[0]
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def int_reply(reply: object, skipped: Skipped, key: str = "") -> int:
    """An integer reply (or integer text, as `GET` of a counter gives); 0 when absent or bad."""
    if skipped.error(reply, key) or reply is None:
        return 0
    if isinstance(reply, int):
        return reply
    value = parse_int(reply) if isinstance(reply, bytes) else None
    if value is None:
        skipped.add(COMMAND_ERROR, key)
        return 0
    return value


def counter_reply(reply: object, skipped: Skipped, key: str = "") -> int | None:
    """A counter key's value (`GET stat:processed`): 0 when absent, None when unusable.

    A counter is exported as an OpenMetrics counter, which cannot be negative: one negative
    sample makes the parser reject the whole response. So a negative value is skipped like a
    malformed one, and the series is left out rather than shown as 0 (a false reset).
    """
    if skipped.error(reply, key):
        return None
    if reply is None:
        return 0
    value = (
        reply if isinstance(reply, int) else parse_int(reply) if isinstance(reply, bytes) else None
    )
    if value is None or value < 0:
        skipped.add(INVALID_COUNTER, key)
        return None
    return value


def members(reply: object, skipped: Skipped, key: str = "") -> list[bytes]:
    """The members of a set (`SMEMBERS`, one SSCAN page)."""
    if skipped.error(reply, key) or not isinstance(reply, list):
        return []
    return [m for m in reply if isinstance(m, bytes)]


def unique_text(raw: Iterable[bytes]) -> list[str]:
    """Set members as text, each once, in the order first seen."""
    # SSCAN may return a member more than once and Sidekiq does not de-duplicate (§2.1).
    return list(dict.fromkeys(m.decode("utf-8", "replace") for m in raw))


def scan_page(reply: object, skipped: Skipped, key: str = "") -> tuple[bytes, list[bytes]]:
    """(next cursor, members) of an SSCAN reply; cursor b"0" ends the scan."""
    if skipped.error(reply, key) or not isinstance(reply, list) or len(reply) != 2:
        return b"0", []
    cursor, page = reply
    return (cursor if isinstance(cursor, bytes) else b"0"), members(page, skipped, key)


def namespace_page(
    reply: object, skipped: Skipped, key: str = ""
) -> tuple[bytes, list[str]] | None:
    """(next cursor, key names) of a `SCAN` page; None (counted) when it was refused."""
    if skipped.error(reply, key):
        return None
    cursor, page = scan_page(reply, skipped, key)
    return cursor, unique_text(page)


def lowest_score(reply: object, skipped: Skipped, key: str = "") -> float | None:
    """Lowest score from `ZRANGE key 0 0 WITHSCORES`.

    RESP2 replies `[member, b"score"]`, RESP3 `[[member, score]]`.
    """
    if skipped.error(reply, key) or not isinstance(reply, list) or not reply:
        return None
    if len(reply) == 1 and isinstance(reply[0], list):
        reply = reply[0]
    if len(reply) != 2:
        return None
    score = reply[1]
    value = (
        score
        if isinstance(score, float)
        else parse_float(score)
        if isinstance(score, bytes)
        else None
    )
    if value is None:
        return None
    # A due time: a score of -1e308 would be a lag of 1e308 s.
    return None if skipped.skip(plausible_time(value), key) else value


def hash_reply(reply: object, skipped: Skipped, key: str = "") -> dict[bytes, bytes]:
    """A raw `HGETALL` reply as a dict: RESP2 sends a flat list, RESP3 a map."""
    if skipped.error(reply, key):
        return {}
    if isinstance(reply, dict):
        return {k: v for k, v in reply.items() if isinstance(k, bytes) and isinstance(v, bytes)}
    if not isinstance(reply, list):
        return {}
    items = iter(reply)
    return {
        k: v
        for k, v in zip(items, items, strict=False)
        if isinstance(k, bytes) and isinstance(v, bytes)
    }


def redis_time(reply: object, skipped: Skipped, fallback: float) -> float:
    """Redis `TIME` ([seconds, microseconds]) as epoch seconds; `fallback` if it failed."""
    if skipped.error(reply, "TIME") or not isinstance(reply, list) or len(reply) != 2:
        return fallback
    seconds, micros = (parse_int(part) for part in reply)
    if seconds is None or micros is None:
        return fallback
    now = plausible_time(seconds + micros / 1_000_000)
    if isinstance(now, Skip):  # a server clock at 1970: ours instead
        skipped.skip(now, "TIME")  # not a key: the command, for the debug log
        return fallback
    return now


_SIZE_TYPES = frozenset({int})  # `LLEN`
_TAIL_TYPES = frozenset({bytes, type(None)})  # `LINDEX`: a job, or nil for an empty queue


def _every_tail_read(
    names: Sequence[str],
    paused: set[str],
    replies: Sequence[object],
    skipped: Skipped,
    commands: Sequence[Sequence[object]],
    memo: TailMemo,
) -> tuple[list[QueueSample], int] | None:
    """`queues` when every tail was read (no queue limit): per queue in C, but for the tails
    the last poll did not read. None when a reply is not of its usual type (an error)."""
    sizes, raw_tails = replies[0::2], replies[1::2]
    if not _SIZE_TYPES.issuperset(map(type, sizes)):
        return None
    if not _TAIL_TYPES.issuperset(map(type, raw_tails)):
        return None
    previous = memo.previous
    oldest = list(map(previous.get, cast("list[bytes | None]", raw_tails)))  # None: unseen
    special = [index for index, value in enumerate(oldest) if value is None or type(value) is Skip]
    for index in special:
        tail = cast("bytes | None", raw_tails[index])
        if tail is not None and tail not in previous:
            oldest[index] = oldest_job_timestamp(tail)
    memo.current.update(zip(cast("list[bytes | None]", raw_tails), oldest, strict=True))
    for index in special:
        value = oldest[index]
        if isinstance(value, Skip):
            skipped.skip(value, key_of(commands[2 * index + 1]))
            oldest[index] = None
    counts, timestamps = cast("list[int]", sizes), cast("list[float | None]", oldest)
    flags = map(paused.__contains__, names)
    return list(map(QueueSample, names, counts, timestamps, flags)), sum(counts)


def queues(
    names: Sequence[str],
    tails: frozenset[str],
    paused: set[str],
    replies: Sequence[object],
    skipped: Skipped,
    commands: Sequence[Sequence[object]],
    memo: TailMemo | None = None,
) -> tuple[list[QueueSample], int]:
    """The queues section: per name `LLEN`, then `LINDEX -1` for the names in `tails`;
    `commands` are the section's (for the keys of what is skipped).

    Returns the queues whose tail was read and the total size of all of them.
    """
    memo = memo if memo is not None else Memo()
    if len(tails) == len(names) and len(replies) == 2 * len(names):
        every = _every_tail_read(names, paused, replies, skipped, commands, memo)
        if every is not None:
            return every
    previous, current = memo.previous, memo.current
    samples: list[QueueSample] = []
    append = samples.append
    enqueued = position = 0
    for name in names:
        # Per queue, the common case first and without calls (~0.3 ms per 1,000 queues):
        # `LLEN` is an int, `LINDEX` a job (bytes) or nil; anything else is checked below.
        size = replies[position]
        if type(size) is not int:
            size = int_reply(size, skipped, key_of(commands[position]))
        position += 1
        enqueued += size
        if name not in tails:
            continue
        tail = replies[position]
        position += 1
        oldest: float | None = None
        if isinstance(tail, bytes):
            decoded = previous[tail] if tail in previous else oldest_job_timestamp(tail)
            current[tail] = decoded
            if isinstance(decoded, Skip):
                skipped.skip(decoded, key_of(commands[position - 1]))
            else:
                oldest = decoded
        elif tail is not None:
            skipped.error(tail, key_of(commands[position - 1]))
        append(QueueSample(name, size, oldest, name in paused))
    return samples, enqueued


_BULK_STRINGS = frozenset({bytes})


def processes(
    identities: Sequence[str],
    replies: Sequence[object],
    skipped: Skipped,
    commands: Sequence[Sequence[object]],
    memo: WorkMemo | None = None,
    infos: InfoMemo | None = None,
) -> tuple[list[ProcessSample], list[RunningJob]]:
    """The processes section: per identity its `HMGET` fields, its `:work` and `:workers`;
    `commands` are the section's (for the keys of what is skipped)."""
    previous, current = (memo.previous, memo.current) if memo is not None else ({}, {})
    samples: list[ProcessSample] = []
    running: list[RunningJob] = []
    triples = iter(replies)
    for index, (identity, fields, work, workers) in enumerate(
        zip(identities, triples, triples, triples, strict=True)
    ):
        if not isinstance(fields, list):
            skipped.error(fields, key_of(commands[3 * index]))
            continue
        process = decode_process(identity, fields, infos)
        if not isinstance(process, ProcessSample):
            # None: stale member, its hash expired (§5.5)
            skipped.skip(process, key_of(commands[3 * index]))
            continue
        samples.append(process)
        # 6.4.0–6.4.1 write `<id>:workers`, 6.4.2+ `<id>:work`; a process writes only one.
        for offset, reply in ((1, work), (2, workers)):
            if not reply:
                continue
            command = commands[3 * index + offset]
            if type(reply) is list and _BULK_STRINGS.issuperset(map(type, reply)):
                values = reply[1::2]  # RESP2: field, value, field, value, …
            else:
                values = list(hash_reply(reply, skipped, key_of(command)).values())
            for value in values:
                entry = (identity, value)
                job = previous[entry] if entry in previous else decode_work_entry(*entry)
                current[entry] = job
                if isinstance(job, RunningJob):
                    running.append(job)
                else:
                    skipped.skip(job, key_of(command))
    return samples, running


def metrics_hash(
    reply: object, skipped: Skipped, key: str = "", memo: MetricsMemo | None = None
) -> dict[str, list[int]] | None:
    """One `j|…` hash (`HGETALL`) as class → [executions, failures, milliseconds]; None when
    the hash is missing or empty (a minute without executions, or nothing Sidekiq wrote).
    Through `memo`, a hash read as before comes back as the same dict: never to be changed."""
    raw = _hashable(reply) if memo is not None and isinstance(reply, list) else None
    if raw is not None and memo is not None and raw in memo.previous:
        decoded = memo.previous[raw]
    else:
        fields = hash_reply(reply, skipped, key)
        decoded = decode_metrics_fields(fields) if fields else None
    if raw is not None and memo is not None:
        memo.current[raw] = decoded
    if decoded is None:
        return None
    by_class, malformed = decoded
    if malformed:
        skipped.add(INVALID_METRIC, key, malformed)
    return by_class


def class_minutes(
    by_class: Mapping[str, list[int]],
    replies: Sequence[object],
    skipped: Skipped,
    commands: Sequence[Sequence[object]],
    memo: MinuteMemo | None = None,
) -> tuple[ClassMinute, ...]:
    """The histograms of one metric minute (per class, `GET key`), with its decoded hash."""
    raw = _hashable(replies) if memo is not None else None
    if raw is not None and memo is not None and raw in memo.previous:
        decoded, minute = memo.previous[raw]
        if decoded is by_class:
            memo.current[raw] = decoded, minute
            return minute
    classes: list[ClassMinute] = []
    complete = True
    for (job_class, counts), reply, command in zip(
        by_class.items(), replies, commands, strict=True
    ):
        # A histogram with its slowest bucket written is 52 bytes: one C call (§6.4).
        if type(reply) is bytes and len(reply) == _HISTOGRAM_BYTES:
            counted: tuple[int, ...] | None = _BIG_ENDIAN_U16S.unpack(reply)
        else:
            counted = histogram(reply, skipped, key_of(command))
            complete = complete and counted is not None
        classes.append(ClassMinute(job_class, counts[0], counts[1], counts[2], counted))
    minute = tuple(classes)
    if raw is not None and memo is not None and complete:  # a skip is counted every poll
        memo.current[raw] = by_class, minute
    return minute


def histogram(reply: object, skipped: Skipped, key: str = "") -> tuple[int, ...] | None:
    """One histogram, read by `GET`; None if unreadable."""
    # None, not zeros, for an unreadable histogram: zeros would make derive see the minute
    # shrink and then count it all again at the next good read.
    if skipped.error(reply, key):
        return None
    result = decode_histogram_bytes(reply if isinstance(reply, bytes) else None)
    if isinstance(result, Skip):
        skipped.skip(result, key)
        return None
    return result


def text_reply(reply: object, skipped: Skipped, key: str = "") -> str | None:
    """A string reply (`GET`) as text; None when the key is absent."""
    if skipped.error(reply, key) or not isinstance(reply, bytes):
        return None
    return _as_text(reply)


def cron_set(scan: object, size: object, skipped: Skipped, key: str = "") -> tuple[list[str], int]:
    """A cron set from one `SSCAN … COUNT n` page and its `SCARD`: (members read, how many
    members that page did not reach). A set too large for the page is not read further."""
    cursor, page = scan_page(scan, skipped, key)
    members = unique_text(page)
    if cursor == b"0":
        return members, 0
    return members, max(0, int_reply(size, skipped, key) - len(members))


def cron_jobs(
    jobs: Sequence[tuple[str, str]],
    replies: Sequence[object],
    skipped: Skipped,
    keys: Sequence[str] = (),
) -> list[CronJobSample]:
    """The cron jobs section: per (namespace, name) its `HMGET` of `status`, `cron` and
    `last_enqueue_time`; `keys` the job hashes read (for the keys of what is skipped)."""
    samples: list[CronJobSample] = []
    for index, ((namespace, name), fields) in enumerate(zip(jobs, replies, strict=True)):
        key = keys[index] if keys else ""
        if skipped.error(fields, key) or not isinstance(fields, list):
            continue
        job = decode_cron_job(namespace, name, fields)
        if isinstance(job, CronJobSample):
            samples.append(job)
        else:
            skipped.skip(job, key)  # None: the hash is gone
    return samples
