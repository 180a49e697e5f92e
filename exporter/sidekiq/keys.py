"""Every Redis key name Sidekiq uses that the exporter reads, and how it differs by version.

Talks to no Redis. Sources are cited as in `docs/redis-layout.md` (§).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis glob pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True, slots=True)
class KeyNames:
    """Key names for one Sidekiq Redis, with Sidekiq 6's optional redis-namespace prefix.

    redis-namespace prefixes key names only, never the members of a set: `queues` holds bare
    queue names and `processes` bare identities even under a namespace.
    Sidekiq 7.0 rejects redis-namespace, so the prefix is "" for 7.x and 8.x.
    """

    prefix: str = ""

    @classmethod
    def for_namespace(cls, namespace: str) -> KeyNames:
        """Key names under redis-namespace `namespace` ("" for none): `ns` → `ns:queues`."""
        return cls(f"{namespace}:" if namespace else "")

    # --- global keys (all versions) ---
    @property
    def queues(self) -> str:
        """SET of queue names (members are bare names, never `queue:<name>`)."""
        return f"{self.prefix}queues"

    @property
    def processes(self) -> str:
        """SET of process identities; may hold stale members whose hash expired (§5.5)."""
        return f"{self.prefix}processes"

    @property
    def processed(self) -> str:
        return f"{self.prefix}stat:processed"

    @property
    def failed(self) -> str:
        return f"{self.prefix}stat:failed"

    @property
    def schedule(self) -> str:
        return f"{self.prefix}schedule"

    @property
    def retry(self) -> str:
        return f"{self.prefix}retry"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def paused(self) -> str:
        """Sidekiq Pro's SET of paused queue names (read by the OSS API from 8.1.1)."""
        return f"{self.prefix}paused"

    @property
    def leader(self) -> str:
        """STRING: the identity of Sidekiq Enterprise's leader process (§5.7)."""
        return f"{self.prefix}dear-leader"

    # --- sidekiq-cron (§9) ---
    @property
    def cron_jobs(self) -> str:
        """sidekiq-cron 1.x's SET of job keys (`cron_job:<name>`); 2.x empties it (§9.2)."""
        return f"{self.prefix}cron_jobs"

    def cron_namespace(self, namespace: str) -> str:
        """sidekiq-cron 2.x's SET of one namespace's job keys (`cron_job:<namespace>:<name>`)."""
        return f"{self.prefix}cron_jobs:{namespace}"

    @property
    def cron_namespace_pattern(self) -> str:
        """The `SCAN MATCH` pattern of every `cron_namespace` key (glob characters of the
        prefix escaped)."""
        return f"{_glob_escape(self.prefix)}cron_jobs:*"

    def namespace_of(self, key: str) -> str | None:
        """The namespace of a `cron_namespace` key (it may contain `:`), else None."""
        head = f"{self.prefix}cron_jobs:"
        return key[len(head) :] if key.startswith(head) and len(key) > len(head) else None

    def cron_set(self, namespace: str) -> str:
        """The SET of a namespace's job keys; namespace "" is sidekiq-cron 1.x's `cron_jobs`."""
        return self.cron_namespace(namespace) if namespace else self.cron_jobs

    def cron_job(self, member: str) -> str:
        """A job's HASH: a member of a cron set is its key name, without Sidekiq 6's prefix."""
        return f"{self.prefix}{member}"

    @staticmethod
    def cron_job_name(member: str, namespace: str) -> str:
        """The job name in a cron set's member, `cron_job:<name>` (1.x, namespace "") or
        `cron_job:<namespace>:<name>` (2.x); the member itself if it has another shape."""
        head = f"cron_job:{namespace}:" if namespace else "cron_job:"
        return member[len(head) :] if member.startswith(head) else member

    # --- per-queue and per-process keys ---
    def queue(self, name: str) -> str:
        """LIST of job JSON; LPUSH at the head, BRPOP from the tail, so index -1 is oldest."""
        return f"{self.prefix}queue:{name}"

    def process(self, identity: str) -> str:
        """HASH of one process's heartbeat (`info`, `busy`, `beat`, …), TTL 60 s."""
        return f"{self.prefix}{identity}"

    def work(self, identity: str) -> str:
        """HASH of running jobs, tid → JSON: Sidekiq 6.4.2 and later."""
        return f"{self.prefix}{identity}:work"

    def workers(self, identity: str) -> str:
        """The same hash under its old name: Sidekiq 6.4.0 and 6.4.1 write `:workers`."""
        return f"{self.prefix}{identity}:workers"

    # --- execution metrics, per UTC minute (6.5.2+ beta, 7.x, 8.x) ---
    def metrics_minute_v7(self, minute: datetime) -> str:
        """6.5.2–7.3 per-minute hash: `j|%Y%m%d|%-H:%-M`, e.g. `j|20250214|8:3`."""
        t = minute.astimezone(UTC)
        return f"{self.prefix}j|{t:%Y%m%d}|{t.hour}:{t.minute}"

    def metrics_minute_v8(self, minute: datetime) -> str:
        """8.0+ per-minute hash: `j|%y%m%d|%-H:%M`, e.g. `j|250214|8:03` (minute zero-padded)."""
        t = minute.astimezone(UTC)
        return f"{self.prefix}j|{t:%y%m%d}|{t.hour}:{t.minute:02d}"

    def histogram_v7(self, job_class: str, minute: datetime) -> str:
        """6.5.2–7.3 histogram: `<class>-%d-%H:%-M`, no `h|` prefix, e.g. `HardJob-14-08:3`."""
        t = minute.astimezone(UTC)
        # `%d`/`%H` as integer formats: the same text, 4× faster than strftime (one key per
        # class and minute read, 600 a poll on the 200-class benchmark fixture).
        return f"{self.prefix}{job_class}-{t.day:02d}-{t.hour:02d}:{t.minute}"

    def histogram_v8(self, job_class: str, minute: datetime) -> str:
        """8.0+ histogram: `h|<class>-%-d-%-H:%-M`, nothing padded, e.g. `h|HardJob-14-8:3`."""
        t = minute.astimezone(UTC)
        return f"{self.prefix}h|{job_class}-{t.day}-{t.hour}:{t.minute}"
