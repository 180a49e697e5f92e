# frozen_string_literal: true

# Push a workload and print ONE JSON object describing what was pushed.
#
#   ruby -I<paths> tests/sidekiq_app/enqueue.rb [name=value ...]
#
# Counts come from `name=value` arguments, then from env ENQUEUE_<NAME>, then from the
# defaults below. With `defaults=0` every count not given explicitly is 0, so
# `defaults=0 fast=1` pushes exactly one FastJob.
#
# Queues: critical, within_5_seconds, billing_within_5_minutes, default, orphan_queue
# (no process in the tests listens to orphan_queue, so its latency grows).

require "securerandom"
require "time"
require_relative "app"

DEFAULTS = {
  "fast" => 20,             # FastJob -> default
  "medium" => 5,            # MediumJob -> default
  "critical" => 10,         # FastJob -> critical
  "within_5_seconds" => 5,  # FastJob -> within_5_seconds
  "billing" => 5,           # Billing::InvoiceJob -> billing_within_5_minutes
  "orphan" => 3,            # FastJob -> orphan_queue
  "scheduled" => 4,         # FastJob.perform_in(scheduled_in) -> schedule
  "failing" => 2,           # FailingJob -> retry (after running once)
  "dead" => 2,              # DeadJob (retry: 0) -> dead (after running once)
  "wrapped" => 2,           # ActiveJob-style raw payload -> default
  "slow" => 2,              # SlowJob(slow_seconds) -> slow_queue
  "slow_seconds" => 60,
  "slow_queue" => "default",
  "scheduled_in" => 3600,
  "wrapped_seconds" => 0.01,
  "billing_slow" => 0,      # Billing::InvoiceJob(i, slow_seconds) -> billing_within_5_minutes
  "overdue" => 0,           # FastJob in `schedule` with a score overdue_seconds in the past
  "overdue_seconds" => 30,
  "overdue_queue" => "default"
}.freeze
STRING_KEYS = %w[slow_queue overdue_queue].freeze
# Parameters (seconds, queue name) always keep their default; only counts are zeroed.
PARAM_KEYS = %w[slow_seconds slow_queue scheduled_in wrapped_seconds overdue_seconds overdue_queue].freeze

args = {}
ARGV.each do |a|
  k, v = a.split("=", 2)
  abort("bad argument #{a.inspect}; expected name=value") if v.nil?
  args[k] = v
end
use_defaults = args.delete("defaults") != "0"
unknown = args.keys - DEFAULTS.keys
abort("unknown argument(s): #{unknown.join(", ")}; known: #{DEFAULTS.keys.join(", ")}") unless unknown.empty?

def value_for(key, args, use_defaults)
  raw = args[key] || ENV["ENQUEUE_#{key.upcase}"]
  default = DEFAULTS[key]
  if raw.nil?
    return default if use_defaults || PARAM_KEYS.include?(key)
    return 0
  end
  return raw if STRING_KEYS.include?(key)
  raw.include?(".") ? Float(raw) : Integer(raw)
end

cfg = DEFAULTS.keys.to_h { |k| [k, value_for(k, args, use_defaults)] }

pushed = Hash.new(0)   # queue -> number of jobs pushed onto queue:<name>
jids = Hash.new { |h, k| h[k] = [] }

push = lambda do |kind, queue, jid|
  raise "push of #{kind} failed" unless jid
  pushed[queue] += 1
  jids[kind] << jid
end

# Slow jobs first, so they are at the tail of their queue and are fetched first.
cfg["slow"].times { push.call("slow", cfg["slow_queue"], SlowJob.set(queue: cfg["slow_queue"]).perform_async(cfg["slow_seconds"])) }
cfg["critical"].times { |i| push.call("critical", "critical", FastJob.set(queue: "critical").perform_async(i)) }
cfg["within_5_seconds"].times { |i| push.call("within_5_seconds", "within_5_seconds", FastJob.set(queue: "within_5_seconds").perform_async(i)) }
cfg["billing_slow"].times { |i| push.call("billing_slow", "billing_within_5_minutes", Billing::InvoiceJob.perform_async(i, cfg["slow_seconds"])) }
cfg["billing"].times { |i| push.call("billing", "billing_within_5_minutes", Billing::InvoiceJob.perform_async(i)) }
cfg["fast"].times { |i| push.call("fast", "default", FastJob.perform_async(i)) }
cfg["medium"].times { |i| push.call("medium", "default", MediumJob.perform_async(i)) }
cfg["orphan"].times { |i| push.call("orphan", "orphan_queue", FastJob.set(queue: "orphan_queue").perform_async(i)) }
cfg["failing"].times { |i| push.call("failing", "default", FailingJob.perform_async(i)) }
cfg["dead"].times { |i| push.call("dead", "default", DeadJob.perform_async(i)) }

cfg["wrapped"].times do
  # What Rails' ActiveJob Sidekiq adapter pushes (args[0] is job.serialize).
  job_id = SecureRandom.uuid
  jid = Sidekiq::Client.push(
    "class" => SidekiqApp.active_job_wrapper,
    "wrapped" => "WrappedMailerJob",
    "queue" => "default",
    "retry" => true,
    "args" => [{
      "job_class" => "WrappedMailerJob",
      "job_id" => job_id,
      "provider_job_id" => nil,
      "queue_name" => "default",
      "priority" => nil,
      "arguments" => [cfg["wrapped_seconds"]],
      "executions" => 0,
      "exception_executions" => {},
      "locale" => "en",
      "timezone" => "UTC",
      "enqueued_at" => Time.now.utc.iso8601(9)
    }]
  )
  push.call("wrapped", "default", jid)
end

scheduled = 0
cfg["scheduled"].times do |i|
  jids["scheduled"] << FastJob.perform_in(cfg["scheduled_in"], i)
  scheduled += 1
end

# Overdue: a member of `schedule` whose time has passed but that no scheduler moved yet (the
# scheduler of a quiet process has stopped). `perform_in` with a past time would push at once,
# so push the raw item: Sidekiq::Client ZADDs any item carrying "at" with that score.
overdue = 0
cfg["overdue"].times do |i|
  jids["overdue"] << Sidekiq::Client.push("class" => FastJob, "args" => [i], "queue" => cfg["overdue_queue"],
                                          "at" => Time.now.to_f - cfg["overdue_seconds"].to_f)
  overdue += 1
end

puts JSON.generate({
  "sidekiq_version" => Sidekiq::VERSION,
  "redis_url" => REDIS_URL.sub(%r{//[^@/]*@}, "//***@"),
  "config" => cfg,
  "pushed" => pushed,
  "pushed_total" => pushed.values.sum,
  "scheduled" => scheduled,
  "overdue" => overdue,
  "jids" => jids
})
