# frozen_string_literal: true

# Print ONE JSON object with what Sidekiq's own Ruby API says about the Redis at REDIS_URL.
# This is the reference ("truth") the conformance tests compare the exporter against.
#
#   ruby -I<paths> tests/sidekiq_app/truth.rb [minutes=10] [classes=A,B]
#
# All reads happen back to back; `redis_time_before` / `redis_time_after` (Redis TIME, float
# seconds) bracket them, so callers know the instant the numbers describe.
#
# NOTE: this script is NOT read-only. `Sidekiq::ProcessSet.new` runs Sidekiq's process cleanup
# (`SREM processes` for members whose hash expired; in 6.5+ also `SET process_cleanup NX EX 60`).
# That is expected here; the exporter itself must never do it.

require "time"
require_relative "app"
require "sidekiq/api"

opts = ARGV.to_h { |a| a.split("=", 2) }
minutes = Integer(opts.fetch("minutes", "10"))
extra_classes = opts.fetch("classes", "").split(",").reject(&:empty?)

def redis_time
  sec, usec = Sidekiq.redis { |c| c.call("TIME") }.map(&:to_i)
  sec + usec / 1_000_000.0
end

def guard
  yield
rescue StandardError, LoadError, NotImplementedError => e
  {"error" => "#{e.class}: #{e.message}"}
end

def parse_json(value)
  value.is_a?(String) ? JSON.parse(value) : value
rescue JSON::ParserError
  nil
end

out = {
  "sidekiq_version" => Sidekiq::VERSION,
  "ruby_version" => RUBY_VERSION,
  "client_library" => defined?(RedisClient::VERSION) ? "redis-client #{RedisClient::VERSION}" : "redis-rb #{Redis::VERSION}",
  "connection_pool_version" => ConnectionPool::VERSION
}
out["redis_time_before"] = redis_time
out["local_time_before"] = Time.now.to_f

# --- Stats (one pipeline for the fast part; enqueued/workers_size use a second round trip)
stats = Sidekiq::Stats.new
out["stats"] = {
  "processed" => stats.processed,
  "failed" => stats.failed,
  "scheduled_size" => stats.scheduled_size,
  "retry_size" => stats.retry_size,
  "dead_size" => stats.dead_size,
  "processes_size" => stats.processes_size,
  "default_queue_latency" => stats.default_queue_latency,
  "enqueued" => stats.enqueued,
  "workers_size" => stats.workers_size
}

# --- Queues
out["queues"] = Sidekiq::Queue.all.map do |q|
  oldest = parse_json(Sidekiq.redis { |c| c.lindex("queue:#{q.name}", -1) })
  {
    "name" => q.name,
    "size" => q.size,
    "latency" => q.latency,
    "paused" => q.paused?,
    "oldest_enqueued_at" => oldest.is_a?(Hash) ? oldest["enqueued_at"] : nil,
    "oldest_created_at" => oldest.is_a?(Hash) ? oldest["created_at"] : nil
  }
end

# --- Processes (NB: ProcessSet.new writes, see header)
ps = Sidekiq::ProcessSet.new
out["processes"] = ps.map do |p|
  attribs = p.instance_variable_get(:@attribs) || {}
  raw_concurrency, raw_info = Sidekiq.redis { |c| c.hmget(p.identity, "concurrency", "info") }
  {
    "identity" => p.identity,
    "hostname" => p["hostname"],
    "tag" => p.tag,
    "pid" => p["pid"],
    # What the API says: `info.concurrency` up to 8.1.1; from 8.1.2 the `concurrency` hash
    # field, `.to_i` (0 for a process that has no such field).
    "concurrency" => p["concurrency"],
    "concurrency_field" => raw_concurrency,  # the raw process-hash field (8.1.2+), or nil
    "info_concurrency" => parse_json(raw_info)&.dig("concurrency"),  # nil from 8.1.2 on
    "busy" => p["busy"],
    "beat" => p["beat"],
    "quiet" => p["quiet"],
    "stopping" => p.stopping?,
    "rss" => p["rss"],
    "rtt_us" => p["rtt_us"],
    "started_at" => p["started_at"],
    "queues" => p["queues"],
    "weights" => p["weights"],
    "capsules" => p["capsules"],
    "labels" => p.labels,
    "version" => p["version"],
    "embedded" => p["embedded"],
    "attribs" => attribs
  }
end
out["process_set"] = {
  "size" => ps.size,
  "total_concurrency" => (ps.total_concurrency if ps.respond_to?(:total_concurrency)),
  "total_rss_kb" => (ps.total_rss_in_kb if ps.respond_to?(:total_rss_in_kb))
}

# --- Running work. 6.4.1 yields a Hash (payload already parsed); 7.2+ yields Sidekiq::Work.
out["work"] = []
Sidekiq::WorkSet.new.each do |process_id, tid, work|
  if work.is_a?(Hash)
    queue = work["queue"]
    run_at = work["run_at"]
    payload = work["payload"]
  else
    queue = work.queue
    # 8.x dropped Work#raw; Work#run_at is Time.at(the stored integer seconds).
    run_at = work.respond_to?(:raw) ? work.raw("run_at") : work.run_at.to_i
    payload = work.payload
  end
  payload = parse_json(payload) || {}
  out["work"] << {
    "process_identity" => process_id,
    "tid" => tid,
    "queue" => queue,
    "run_at" => run_at,
    "class" => payload["wrapped"] || payload["class"],
    "raw_class" => payload["class"],
    "display_class" => guard { Sidekiq::JobRecord.new(payload).display_class },
    "jid" => payload["jid"],
    "enqueued_at" => payload["enqueued_at"],
    "created_at" => payload["created_at"]
  }
end

# --- Sorted sets
def sorted_set_summary(set, limit = 200)
  entries = []
  set.each do |entry|
    break if entries.size >= limit
    entries << {"class" => entry.display_class, "raw_class" => entry.klass, "queue" => entry.queue,
                "jid" => entry.jid, "score" => entry.score, "error_class" => entry.item["error_class"],
                "retry_count" => entry.item["retry_count"]}
  end
  {"size" => set.size, "entries" => entries}
end
out["scheduled"] = sorted_set_summary(Sidekiq::ScheduledSet.new)
out["retry"] = sorted_set_summary(Sidekiq::RetrySet.new)
out["dead"] = sorted_set_summary(Sidekiq::DeadSet.new)

out["redis_time_after"] = redis_time

# --- Execution metrics (7.x and 8.x; 6.5 only with SIDEKIQ_METRICS_BETA; absent in 6.4).
# Each version's Query reads only its own key family (8.x: `j|%y%m%d|…` and `h|…` histograms).
out["metrics"] = if SidekiqApp.major < 7
  {"available" => false, "error" => "Sidekiq #{Sidekiq::VERSION} has no execution metrics (6.5+ beta, 7.0+)"}
else
  guard do
    require "sidekiq/metrics/query"
    now = Time.at(out["redis_time_after"]).utc
    query = Sidekiq::Metrics::Query.new(now: now)
    top = query.top_jobs(minutes: minutes)
    classes = (top.job_results.keys | extra_classes).sort
    series_of = ->(jr) { jr.series.to_h { |metric, by_minute| [metric, by_minute.to_h] } }
    # The raw per-minute hashes of both key families (7.x `j|%Y%m%d|%-H:%-M`, 8.x
    # `j|%y%m%d|%-H:%M`), whichever exist: a mixed 7.x/8.x cluster writes both for one minute.
    raw_minutes = []
    Sidekiq.redis do |c|
      minutes.times do |i|
        t = now - 60 * i
        {"7" => "j|#{t.strftime("%Y%m%d")}|#{t.hour}:#{t.min}",
         "8" => t.strftime("j|%y%m%d|%-H:%M")}.each do |family, key|
          fields = c.hgetall(key)
          next if fields.empty?
          raw_minutes << {"family" => family, "key" => key, "minute" => t.strftime("%Y-%m-%dT%H:%M:00Z"),
                          "ttl" => c.ttl(key), "fields" => fields}
        end
      end
    end
    {
      "available" => true,
      "minutes" => minutes,
      "query_now" => now.iso8601(6),
      # 7.x: "HH:MM" labels, oldest first, the last one the current, partial minute.
      "buckets" => (top.buckets if top.respond_to?(:buckets)),
      "starts_at" => (top.starts_at&.iso8601 if top.respond_to?(:starts_at)),
      "top_jobs" => top.job_results.to_h { |k, jr| [k, {"totals" => jr.totals.to_h, "series" => series_of.call(jr)}] },
      "for_job" => classes.to_h do |k|
        [k, guard do
          jr = query.for_job(k, minutes: minutes).job_results[k]
          {
            "totals" => jr.totals.to_h,
            "series" => series_of.call(jr),
            # Query reverses each histogram for display (7.0.9+, 8.x); "hist" is storage
            # order, index 0 = fastest bucket (< 20 ms), 25 = slowest.
            "hist" => jr.hist.to_h { |minute, counts| [minute, counts.reverse] },
            "hist_query_order" => jr.hist.to_h
          }
        end]
      end,
      "raw_minutes" => raw_minutes
    }
  end
end

puts JSON.generate(out)
