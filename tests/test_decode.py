"""Decoders for every generation's shapes (docs/redis-layout.md), and bad data."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.exceptions import ResponseError

from exporter.model import (
    HISTOGRAM_BUCKETS,
    ClassMinute,
    CronJobSample,
    ProcessSample,
    RunningJob,
)
from exporter.sidekiq import decode
from exporter.sidekiq.decode import Skip

NOW = 1_755_450_000.0


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("1755450000.1234567", 1755450000.1234567),  # 6.x/7.x: Float seconds
        ("1755450000123", 1755450000.123),  # 8.x: Integer milliseconds
        ("1755450000", 1755450000.0),  # integer below 1e11: seconds (non-Ruby producer)
        ("1.7554500001234567e9", 1755450000.1234567),  # exponent form is a float: seconds
        ("null", None),
    ],
)
def test_payload_timestamp_unit_per_json_token(token: str, expected: float | None) -> None:
    value = decode.payload_timestamp(json.loads(token))
    assert value == pytest.approx(expected) if expected is not None else value is None


@pytest.mark.parametrize("token", ['"1755450000"', "true", "[1]", "NaN", "Infinity"])
def test_payload_timestamp_rejects_non_numbers(token: str) -> None:
    assert decode.payload_timestamp(json.loads(token)) == Skip(decode.INVALID_JOB)


@pytest.mark.parametrize(
    "token",
    [
        "-1e308",  # a lag of 1e308 s if taken as it is
        "0",
        "1.5",
        "999999999.9",  # just before 2001-09-09
        "100000000000.0",  # 1e11 s as a float: the year 5138
        "999999999999",  # milliseconds before 2001-09-09
        "100000000000000",  # 1e14 ms: 1e11 s
    ],
)
def test_payload_timestamp_outside_the_plausible_years_is_skipped(token: str) -> None:
    assert decode.payload_timestamp(json.loads(token)) == Skip(decode.INVALID_TIMESTAMP)


def test_every_time_from_redis_is_bounded() -> None:
    # Sorted-set score, Redis TIME, process beat and start, a running job's start: each is
    # skipped and counted outside the plausible years; a queue tail's is tested above.
    skipped = decode.Skipped()
    assert decode.lowest_score([b"job", b"-1e308"], skipped) is None
    assert decode.lowest_score([b"job", b"1755450000.5"], skipped) == 1755450000.5
    assert decode.redis_time([b"12", b"0"], skipped, fallback=NOW) == NOW  # a clock at 1970
    assert skipped == {decode.INVALID_TIMESTAMP: 2}
    info = json.dumps({"hostname": "h", "queues": ["default"], "started_at": NOW}).encode()
    fields = [info, b"5", b"1", b"1.5", None, b"100", b"300"]  # beat 1.5
    assert decode.decode_process("p", fields) == Skip(decode.INVALID_TIMESTAMP)
    info = json.dumps({"hostname": "h", "queues": ["default"], "started_at": -1e300}).encode()
    fields = [info, b"5", b"1", b"1755450000.5", None, b"100", b"300"]
    assert decode.decode_process("p", fields) == Skip(decode.INVALID_TIMESTAMP)
    work = json.dumps({"queue": "default", "payload": {"class": "J"}, "run_at": 17}).encode()
    assert decode.decode_work_entry("p", work) == Skip(decode.INVALID_TIMESTAMP)


def job(**fields: Any) -> bytes:
    return json.dumps({"class": "HardJob", "args": [], "jid": "x", **fields}).encode()


def test_oldest_job_timestamp_prefers_enqueued_at_then_created_at() -> None:
    assert decode.oldest_job_timestamp(job(enqueued_at=NOW, created_at=NOW - 9)) == NOW
    assert decode.oldest_job_timestamp(job(created_at=NOW - 9)) == NOW - 9
    assert decode.oldest_job_timestamp(job()) is None  # Sidekiq reports 0 then
    assert decode.oldest_job_timestamp(None) is None  # empty queue


def test_oldest_job_timestamp_mixed_units_in_one_job() -> None:
    # Created by a 7.x client (float s), enqueued by an 8.x scheduler (int ms).
    raw = job(created_at=NOW - 30.5, enqueued_at=int(NOW * 1000))
    assert decode.oldest_job_timestamp(raw) == pytest.approx(NOW)


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'"str"', b"\xff\xfe", b""])
def test_oldest_job_timestamp_skips_malformed_jobs(raw: bytes) -> None:
    assert decode.oldest_job_timestamp(raw) == Skip(decode.INVALID_JOB)


def test_job_class_prefers_wrapped() -> None:
    wrapper = "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"
    assert decode.job_class({"class": wrapper, "wrapped": "Mailer"}) == "Mailer"
    assert decode.job_class({"class": "Billing::InvoiceJob"}) == "Billing::InvoiceJob"
    assert decode.job_class({"class": 5}) is None


def info(**overrides: Any) -> bytes:
    base: dict[str, Any] = {
        "hostname": "worker-1",
        "started_at": NOW - 100,
        "pid": 4242,
        "tag": "app",
        "concurrency": 10,
        "queues": ["critical", "default"],
        "labels": [],
        "identity": "worker-1:4242:0a1b2c3d4e5f",
    }
    base.update(overrides)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def process_fields(
    info_raw: bytes | None, concurrency: bytes | None = None, **fields: bytes | None
) -> list[bytes | None]:
    values = {"busy": b"2", "beat": b"1755450123.4567891", "quiet": b"false"}
    values.update({"rss": b"183456", "rtt_us": b"312"})
    values.update(fields)
    return [info_raw, concurrency, values["busy"], values["beat"], values["quiet"],
            values["rss"], values["rtt_us"]]  # fmt: skip


def test_process_6x_7x_concurrency_from_info() -> None:
    process = decode.decode_process("id", process_fields(info()))
    assert isinstance(process, ProcessSample)
    assert process.concurrency == 10
    assert process.busy == 2
    assert process.rss_bytes == 183456 * 1024
    assert process.redis_rtt_seconds == pytest.approx(0.000312)
    assert process.heartbeat_timestamp == pytest.approx(1755450123.4567891)
    assert process.start_timestamp == pytest.approx(NOW - 100)
    assert process.quiet is False
    assert process.version == ""
    assert process.queue_capacity == {"critical": 10, "default": 10}


def test_process_8_1_2_concurrency_from_hash_field() -> None:
    caps = {"default": {"concurrency": 5, "mode": "strict", "weights": {"critical": 0}}}
    raw = info(concurrency=None, version="8.1.7", capsules=caps, queues=["critical"])
    process = decode.decode_process("id", process_fields(raw, concurrency=b"7", quiet=b"true"))
    assert isinstance(process, ProcessSample)
    assert process.concurrency == 7  # the live field, not the boot-time capsule value
    assert process.queue_capacity == {"critical": 7}
    assert process.quiet is True
    assert process.version == "8.1.7"


def test_process_with_several_capsules_has_per_capsule_capacity() -> None:
    caps = {
        "default": {"concurrency": 5, "mode": "strict", "weights": {"default": 0, "low": 0}},
        "single": {"concurrency": 1, "mode": "strict", "weights": {"serial": 0, "default": 0}},
    }
    raw = info(concurrency=6, capsules=caps, version="8.0.9")
    process = decode.decode_process("id", process_fields(raw))
    assert isinstance(process, ProcessSample)
    assert process.queue_capacity == {"default": 6, "low": 5, "serial": 1}


def test_process_stale_member_is_none_not_a_skip() -> None:
    assert decode.decode_process("id", [None] * 7) is None


@pytest.mark.parametrize(
    "fields",
    [
        process_fields(b"{not json"),
        process_fields(b"[]"),
        process_fields(info(), busy=b"many"),
        process_fields(info(), beat=None),
        process_fields(info(), beat=b"nan"),
        process_fields(info(concurrency="5")),
        process_fields(info(started_at="yesterday")),
        process_fields(info(queues="default")),
    ],
)
def test_process_malformed_is_skipped(fields: list[bytes | None]) -> None:
    assert decode.decode_process("id", fields) == Skip(decode.INVALID_PROCESS)


def work(payload: object, queue: object = "default", run_at: object = 1755450001) -> bytes:
    return json.dumps({"queue": queue, "payload": payload, "run_at": run_at}).encode()


def test_work_entry_double_encoded_payload() -> None:
    payload = json.dumps({"class": "HardJob", "created_at": 1755450000123})
    entry = decode.decode_work_entry("id", work(payload))
    assert entry == RunningJob("id", "default", "HardJob", 1755450001.0)


def test_work_entry_object_payload_and_wrapped_class() -> None:
    entry = decode.decode_work_entry("id", work({"class": "Wrapper", "wrapped": "Mailer"}))
    assert isinstance(entry, RunningJob)
    assert entry.job_class == "Mailer"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"nope",
        work("not json"),
        work(json.dumps({"args": []})),
        work(json.dumps({"class": "A"}), queue=None),
        work(json.dumps({"class": "A"}), run_at="now"),
    ],
)
def test_work_entry_malformed_is_skipped(raw: bytes) -> None:
    assert decode.decode_work_entry("id", raw) == Skip(decode.INVALID_WORK)


def test_metrics_fields_by_class_and_malformed_count() -> None:
    fields = {
        b"HardJob|p": b"40",
        b"HardJob|f": b"5",
        b"HardJob|ms": b"4000",
        b"Billing::InvoiceJob|p": b"3",
        b"Odd|x": b"1",
        b"NoPipe": b"1",
        b"Bad|p": b"lots",
    }
    by_class, malformed = decode.decode_metrics_fields(fields)
    assert by_class == {"HardJob": [40, 5, 4000], "Billing::InvoiceJob": [3, 0, 0]}
    assert malformed == 3


def test_histogram_bytes_are_big_endian_u16s() -> None:
    counts = [index * 7 % 65536 for index in range(HISTOGRAM_BUCKETS)]
    counts[3] = 65535
    raw = b"".join(c.to_bytes(2, "big") for c in counts)
    assert decode.decode_histogram_bytes(raw) == tuple(counts)


def test_histogram_short_string_pads_with_zero() -> None:
    assert decode.decode_histogram_bytes(b"\x00\x05\x01") == (5, 256) + (0,) * 24
    assert decode.decode_histogram_bytes(None) == (0,) * HISTOGRAM_BUCKETS


def test_histogram_malformed() -> None:
    assert decode.decode_histogram_bytes(b"x" * 1000) == Skip(decode.INVALID_METRIC)


# --- whole replies: each reader section's slice ----------------------------------------------


def test_error_replies_are_counted_by_kind_never_raised() -> None:
    skipped = decode.Skipped()
    assert skipped.error(ResponseError("WRONGTYPE Operation against a key"))
    assert skipped.error(ResponseError("ERR something else"))
    assert not skipped.error(b"value")
    assert decode.int_reply(b"lots", skipped) == 0  # a counter that is not a number
    assert skipped == {decode.WRONG_TYPE: 1, decode.COMMAND_ERROR: 2}


@pytest.mark.parametrize(
    ("reply", "value", "reason"),
    [
        (None, 0, None),  # no key yet: Sidekiq's own reading is 0
        (b"42", 42, None),
        (42, 42, None),
        (b"-5", None, decode.INVALID_COUNTER),  # OpenMetrics counters cannot be negative
        (-5, None, decode.INVALID_COUNTER),
        (b"lots", None, decode.INVALID_COUNTER),
        (b"1e400", None, decode.INVALID_COUNTER),
        (ResponseError("WRONGTYPE x"), None, decode.WRONG_TYPE),
    ],
)
def test_counter_reply_is_a_whole_number_of_at_least_zero(
    reply: object, value: int | None, reason: str | None
) -> None:
    skipped = decode.Skipped()
    assert decode.counter_reply(reply, skipped) == value
    assert skipped == ({reason: 1} if reason else {})


def test_queues_section_reads_a_tail_only_for_the_queues_planned() -> None:
    skipped = decode.Skipped()
    replies = [5, job(enqueued_at=NOW - 3), 7, 2, b"{not json", ResponseError("WRONGTYPE x")]
    commands = [
        ("LLEN", "queue:a"),
        ("LINDEX", "queue:a", -1),
        ("LLEN", "queue:b"),
        ("LLEN", "queue:c"),
        ("LINDEX", "queue:c", -1),
        ("LLEN", "queue:d"),
    ]
    queues, enqueued = decode.queues(
        ["a", "b", "c", "d"], frozenset({"a", "c"}), {"c"}, replies, skipped, commands
    )
    # a: LLEN + LINDEX; b: LLEN only; c: LLEN + LINDEX; d: LLEN (an error reply) only.
    assert [(q.name, q.size, q.oldest_job_timestamp, q.paused) for q in queues] == [
        ("a", 5, NOW - 3, False),
        ("c", 2, None, True),
    ]
    assert enqueued == 14  # every queue's size, its tail read or not
    assert skipped == {decode.INVALID_JOB: 1, decode.WRONG_TYPE: 1}
    # The keys of what was skipped, for the debug log.
    assert skipped.examples == [(decode.INVALID_JOB, "queue:c"), (decode.WRONG_TYPE, "queue:d")]


def test_processes_section_takes_three_replies_per_identity() -> None:
    skipped = decode.Skipped()
    info = json.dumps({"hostname": "h", "queues": ["default"], "concurrency": 5}).encode()
    fields = [info, None, b"1", b"1755450000.5", None, b"100", b"300"]
    work = json.dumps({"queue": "default", "payload": {"class": "J"}, "run_at": NOW}).encode()
    replies = [fields, [b"t1", work, b"t2", b"{"], [], [None] * 7, [], []]
    commands = [
        (command, key)
        for identity in ("live:1:a", "stale:2:b")
        for command, key in (
            ("HMGET", identity),
            ("HGETALL", f"{identity}:work"),
            ("HGETALL", f"{identity}:workers"),
        )
    ]
    processes, running = decode.processes(["live:1:a", "stale:2:b"], replies, skipped, commands)
    assert [p.identity for p in processes] == ["live:1:a"]  # the stale member has no hash
    assert running == [RunningJob("live:1:a", "default", "J", NOW)]
    assert skipped == {decode.INVALID_WORK: 1}
    assert skipped.examples == [(decode.INVALID_WORK, "live:1:a:work")]


def test_skipped_keys_are_kept_for_the_first_few_items_only() -> None:
    skipped = decode.Skipped()
    for index in range(decode.MAX_SKIPPED_KEYS + 5):
        skipped.add(decode.INVALID_JOB, f"queue:q{index}")
    skipped.add(decode.INVALID_METRIC, "", 3)  # no key to name: counted, not listed
    assert skipped == {decode.INVALID_JOB: decode.MAX_SKIPPED_KEYS + 5, decode.INVALID_METRIC: 3}
    assert len(skipped.examples) == decode.MAX_SKIPPED_KEYS


def test_histogram_reply_unreadable_is_none() -> None:
    skipped = decode.Skipped()
    assert decode.histogram(ResponseError("ERR x"), skipped) is None
    assert decode.histogram(b"\x00\x01" * HISTOGRAM_BUCKETS, skipped) == (1,) * HISTOGRAM_BUCKETS
    assert decode.histogram(None, skipped) == (0,) * HISTOGRAM_BUCKETS  # GET of no key
    assert decode.histogram(b"x" * 1000, skipped, "h") is None
    assert skipped == {decode.COMMAND_ERROR: 1, decode.INVALID_METRIC: 1}


# --- sidekiq-cron -------------------------------------------------------------------------------

ENQUEUED = datetime(2025, 2, 14, 8, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "raw",
    [
        b"2025-02-14 08:00:00 +0000",  # what an enqueue writes (strftime %z)
        b"2025-02-14 08:00:00 UTC",  # 1.x's save of a loaded job (Time#to_s)
        b"2025-02-14 09:00:00 +0100",
        b"2025-02-14T08:00:00Z",  # DateTime.parse takes ISO 8601 too
        b"2025-02-14 08:00:00",  # no zone: UTC
    ],
)
def test_cron_enqueue_time_formats(raw: bytes) -> None:
    assert decode.cron_enqueue_time(raw) == ENQUEUED


@pytest.mark.parametrize("raw", [None, b"", b"  "])
def test_cron_enqueue_time_empty_is_never(raw: bytes | None) -> None:
    assert decode.cron_enqueue_time(raw) is None


@pytest.mark.parametrize("raw", [b"yesterday", b"2025-02-30 08:00:00 +0000", b"\xff\xfe"])
def test_cron_enqueue_time_garbage_is_skipped(raw: bytes) -> None:
    assert decode.cron_enqueue_time(raw) == Skip(decode.INVALID_CRON_JOB)


@pytest.mark.parametrize("raw", [b"1970-01-01 00:00:00 +0000", b"9999-12-31T23:59:59+14:00"])
def test_cron_enqueue_time_outside_the_plausible_years_is_skipped(raw: bytes) -> None:
    # Before 2001-09-09, or after the year 5138 (1e11 s).
    assert decode.cron_enqueue_time(raw) == Skip(decode.INVALID_TIMESTAMP)


def test_cron_job_from_its_fields() -> None:
    job = decode.decode_cron_job("default", "nightly", [b"enabled", b"0 3 * * *", b""])
    assert job == CronJobSample("default", "nightly", True, "0 3 * * *", None)
    # sidekiq-cron reads a missing status as enabled, and anything but "enabled" as disabled.
    missing = decode.decode_cron_job("", "x", [None, b"* * * * *", b"2025-02-14 08:00:00 UTC"])
    assert missing == CronJobSample("", "x", True, "* * * * *", ENQUEUED)
    paused = decode.decode_cron_job("", "x", [b"paused", b"* * * * *", None])
    assert isinstance(paused, CronJobSample)
    assert not paused.enabled
    # The hash is gone (a member left behind): nothing, and nothing counted.
    assert decode.decode_cron_job("", "x", [None, None, None]) is None
    bad_time = decode.decode_cron_job("", "x", [b"enabled", b"* * * * *", b"soon"])
    assert bad_time == Skip(decode.INVALID_CRON_JOB)


def test_cron_set_reads_one_page_and_counts_what_it_left() -> None:
    skipped = decode.Skipped()
    whole = [b"0", [b"cron_job:a", b"cron_job:b", b"cron_job:a"]]
    assert decode.cron_set(whole, 2, skipped) == (["cron_job:a", "cron_job:b"], 0)
    partial = [b"1234", [b"cron_job:a", b"cron_job:b"]]
    assert decode.cron_set(partial, 100_000, skipped) == (["cron_job:a", "cron_job:b"], 99_998)
    wrong = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert decode.cron_set(wrong, wrong, skipped) == ([], 0)
    assert skipped == {decode.WRONG_TYPE: 1}  # SCARD is not read after a refused page


def test_cron_jobs_section_one_hmget_per_job() -> None:
    skipped = decode.Skipped()
    jobs = [("", "a"), ("default", "b"), ("default", "gone"), ("default", "bad")]
    wrong = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    replies: list[object] = [
        [b"enabled", b"* * * * *", b""],
        wrong,
        [None, None, None],
        [b"enabled", b"* * * * *", b"garbage"],
    ]
    assert decode.cron_jobs(jobs, replies, skipped) == [
        CronJobSample("", "a", True, "* * * * *", None)
    ]
    assert skipped == {decode.WRONG_TYPE: 1, decode.INVALID_CRON_JOB: 1}


def test_namespace_page_and_leader_replies() -> None:
    skipped = decode.Skipped()
    page = [b"0", [b"cron_jobs:default", b"cron_jobs:default"]]
    assert decode.namespace_page(page, skipped) == (b"0", ["cron_jobs:default"])
    assert decode.namespace_page(ResponseError("ERR syntax error"), skipped) is None
    assert decode.text_reply(b"host:1:0123456789ab", skipped) == "host:1:0123456789ab"
    assert decode.text_reply(None, skipped) is None
    assert skipped == {decode.COMMAND_ERROR: 1}


# --- memos: a reply read again is not decoded again, and decodes the same --------------------


def _copy(raw: bytes) -> bytes:
    return bytes(bytearray(raw))  # equal, not the same object: as the next poll's reply is


def test_queues_memo_decodes_a_tail_once_and_counts_its_skip_every_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[bytes] = []
    original = decode.oldest_job_timestamp

    def counting(raw: bytes | None) -> float | Skip | None:
        decoded.append(bytes(raw or b""))
        return original(raw)

    monkeypatch.setattr(decode, "oldest_job_timestamp", counting)
    memo: decode.Memo[bytes, float | Skip | None] = decode.Memo()
    commands = [("LLEN", "queue:a"), ("LINDEX", "queue:a", -1)] * 2
    good, bad = job(enqueued_at=NOW - 3), b"{"

    def poll(tail_a: bytes, tail_b: bytes) -> tuple[list[tuple[str, float | None]], decode.Skipped]:
        memo.next_poll()
        skipped = decode.Skipped()
        replies = [1, _copy(tail_a), 1, _copy(tail_b)]
        queues, _ = decode.queues(
            ["a", "b"], frozenset("ab"), set(), replies, skipped, commands, memo
        )
        return [(q.name, q.oldest_job_timestamp) for q in queues], skipped

    first = poll(good, bad)
    assert first == ([("a", NOW - 3), ("b", None)], {decode.INVALID_JOB: 1})
    memo.settle()  # the end of a poll: its own entries stay, the one before goes
    assert memo.previous == {}
    assert len(memo.current) == 2
    assert poll(good, bad) == first  # the skip counted again, from the memo
    assert len(decoded) == 2
    moved = job(enqueued_at=NOW - 1)
    assert poll(moved, bad)[0] == [("a", NOW - 1), ("b", None)]  # a new tail: decoded
    assert decoded[2:] == [moved]
    memo.next_poll()
    memo.next_poll()  # a poll that did not read them: forgotten
    poll(moved, bad)
    assert len(decoded) == 5


def test_work_memo_gives_the_same_running_jobs() -> None:
    info = json.dumps({"hostname": "h", "queues": ["default"], "concurrency": 5}).encode()
    fields = [info, None, b"1", b"1755450000.5", None, b"100", b"300"]
    entry = work({"class": "J"})
    commands = [("HMGET", "p"), ("HGETALL", "p:work"), ("HGETALL", "p:workers")]
    memo: decode.Memo[tuple[str, bytes], RunningJob | Skip] = decode.Memo()
    results = []
    for _ in range(2):
        memo.next_poll()
        skipped = decode.Skipped()
        replies = [fields, [b"t1", _copy(entry), b"t2", b"{"], []]
        results.append(decode.processes(["p"], replies, skipped, commands, memo)[1])
        assert skipped == {decode.INVALID_WORK: 1}
        assert len(memo.current) == 2
    assert results[0] == results[1] == [RunningJob("p", "default", "J", 1755450001.0)]
    assert results[1][0] is results[0][0]  # from the memo


def test_metrics_memo_returns_the_same_classes_and_counts_malformed_fields_every_poll() -> None:
    memo: decode.MetricsMemo = decode.Memo()
    reply = [b"A|p", b"4", b"A|ms", b"40", b"bad", b"1"]
    seen = []
    for _ in range(2):
        memo.next_poll()
        skipped = decode.Skipped()
        seen.append(decode.metrics_hash([_copy(r) for r in reply], skipped, "j|x", memo))
        assert skipped == {decode.INVALID_METRIC: 1}
    assert seen[0] == {"A": [4, 0, 40]}
    assert seen[1] is seen[0]
    memo.next_poll()
    changed = decode.metrics_hash([b"A|p", b"5"], decode.Skipped(), "j|x", memo)
    assert changed == {"A": [5, 0, 0]}
    assert decode.metrics_hash([[b"nested"]], decode.Skipped(), "j|x", memo) is None  # no raise


def test_minute_memo_needs_the_same_decoded_hash_and_no_skip() -> None:
    memo: decode.MinuteMemo = decode.Memo()
    by_class = {"A": [4, 0, 40], "B": [1, 1, 0]}
    full = bytes(range(2 * HISTOGRAM_BUCKETS))
    commands = [("GET", "A-1-00:0"), ("GET", "B-1-00:0")]

    def minute(
        classes: dict[str, list[int]], replies: list[object]
    ) -> tuple[tuple[ClassMinute, ...], decode.Skipped]:
        memo.next_poll()
        skipped = decode.Skipped()
        return decode.class_minutes(classes, replies, skipped, commands, memo), skipped

    first, _ = minute(by_class, [_copy(full), b"\x00\x02"])
    assert first == (
        ClassMinute("A", 4, 0, 40, tuple(256 * full[i] + full[i + 1] for i in range(0, 52, 2))),
        ClassMinute("B", 1, 1, 0, (2,) + (0,) * (HISTOGRAM_BUCKETS - 1)),
    )
    again, _ = minute(by_class, [_copy(full), b"\x00\x02"])
    assert again is first
    other = {"A": [5, 0, 50], "B": [1, 1, 0]}  # the hash changed, the histograms did not
    assert minute(other, [_copy(full), b"\x00\x02"])[0][0].executions == 5
    bad = [full, b"x" * 1000]  # a skipped histogram: counted every poll, never memoized
    for _ in range(2):
        minute_, skipped = minute(other, bad)
        assert minute_[1].histogram is None
        assert skipped == {decode.INVALID_METRIC: 1}


@pytest.mark.parametrize("size_of_c", [2, ResponseError("WRONGTYPE x")])
def test_queues_with_every_tail_read_decode_as_one_by_one(size_of_c: object) -> None:
    # Every tail read (no queue limit) takes a path per queue in C, unless a reply is not of
    # its usual type; both give what the queue-by-queue loop gives.
    names = ["a", "b", "c", "d"]
    commands = [(c, f"queue:{n}", *a) for n in names for c, a in (("LLEN", ()), ("LINDEX", (-1,)))]
    replies = [5, job(enqueued_at=NOW - 3), 0, None, size_of_c, b"{", 1, job()]
    skipped = decode.Skipped()
    queues, enqueued = decode.queues(names, frozenset(names), {"b"}, replies, skipped, commands)
    assert queues == [
        ("a", 5, NOW - 3, False),
        ("b", 0, None, True),
        ("c", size_of_c if isinstance(size_of_c, int) else 0, None, False),
        ("d", 1, None, False),
    ]
    assert enqueued == 6 + (size_of_c if isinstance(size_of_c, int) else 0)
    reasons = [reason for reason, _ in skipped.examples]
    assert reasons == ([] if isinstance(size_of_c, int) else [decode.WRONG_TYPE]) + [
        decode.INVALID_JOB
    ]
    assert skipped.examples[-1] == (decode.INVALID_JOB, "queue:c")


def test_process_info_memo_reads_each_beat_and_decodes_info_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[bytes] = []
    original = decode.process_info

    def counting(info: bytes, concurrency: bytes | None) -> decode.ProcessInfo | Skip:
        decoded.append(info)
        return original(info, concurrency)

    monkeypatch.setattr(decode, "process_info", counting)
    infos: decode.InfoMemo = decode.Memo()
    info = json.dumps({"hostname": "h", "queues": ["a"], "concurrency": 5, "started_at": NOW})
    too_early = json.dumps({"queues": ["a"], "concurrency": 5, "started_at": 5})

    def read(raw: str, beat: float, busy: bytes = b"1") -> ProcessSample | Skip | None:
        infos.next_poll()
        fields = [_copy(raw.encode()), None, busy, repr(beat).encode(), None, b"100", b"300"]
        return decode.decode_process("p", fields, infos)

    first, second = read(info, NOW), read(info, NOW + 10)
    assert isinstance(first, ProcessSample)
    assert isinstance(second, ProcessSample)
    assert (first.heartbeat_timestamp, second.heartbeat_timestamp) == (NOW, NOW + 10)
    assert len(decoded) == 1
    assert second == decode.decode_process(
        "p", [info.encode(), None, b"1", repr(NOW + 10).encode(), None, b"100", b"300"]
    )
    assert read(info, NOW, busy=b"x") == Skip(decode.INVALID_PROCESS)  # a beat field, each time
    assert read(info, 5.0) == Skip(decode.INVALID_TIMESTAMP)
    assert read(too_early, NOW) == read(too_early, NOW) == Skip(decode.INVALID_TIMESTAMP)
    assert len(decoded) == 3  # one more without the memo, one for `too_early`
