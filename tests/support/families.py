"""The metric families the exporter exposes, as sample names (counters end in `_total`)."""

from __future__ import annotations

ALL_FAMILIES = frozenset(
    {
        "sidekiq_up",
        "sidekiq_processed_jobs_total",
        "sidekiq_failed_jobs_total",
        "sidekiq_enqueued_jobs",
        "sidekiq_scheduled_jobs",
        "sidekiq_retry_jobs",
        "sidekiq_dead_jobs",
        "sidekiq_scheduled_overdue_jobs",
        "sidekiq_scheduled_lag_seconds",
        "sidekiq_queue_enqueued_jobs",
        "sidekiq_queue_latency_seconds",
        "sidekiq_queue_paused",
        "sidekiq_queue_busy_workers",
        "sidekiq_queue_workers",
        "sidekiq_queue_processes",
        "sidekiq_queue_max_processing_time_seconds",
        "sidekiq_queue_info",
        "sidekiq_queue_sla_seconds",
        "sidekiq_queue_sla_breach_seconds_total",
        "sidekiq_processes",
        "sidekiq_workers",
        "sidekiq_busy_workers",
        "sidekiq_process_busy_workers",
        "sidekiq_process_concurrency",
        "sidekiq_process_memory_rss_bytes",
        "sidekiq_process_redis_rtt_seconds",
        "sidekiq_process_heartbeat_timestamp_seconds",
        "sidekiq_process_start_time_seconds",
        "sidekiq_process_quiet",
        "sidekiq_process_info",
        "sidekiq_running_jobs",
        "sidekiq_running_job_max_age_seconds",
        "sidekiq_job_executions_total",
        "sidekiq_job_failures_total",
        "sidekiq_job_duration_seconds_bucket",
        "sidekiq_job_duration_seconds_sum",
        "sidekiq_job_duration_seconds_count",
        "sidekiq_exporter_build_info",
        "sidekiq_exporter_poll_duration_seconds",
        "sidekiq_exporter_polls_total",
        "sidekiq_exporter_last_poll_success_timestamp_seconds",
        "sidekiq_exporter_redis_round_trips",
        "sidekiq_exporter_skipped_items_total",
    }
)

# Per-class execution metrics: only from Sidekiq 7+ (6.4 keeps none, so the exporter has none).
JOB_CLASS_FAMILIES = frozenset(name for name in ALL_FAMILIES if name.startswith("sidekiq_job_"))
