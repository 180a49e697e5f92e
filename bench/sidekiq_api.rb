# frozen_string_literal: true

# Times what a Ruby Sidekiq exporter does per scrape, with Sidekiq's own API, inside Ruby.
#
#   REDIS_URL=redis://127.0.0.1:6379/0 ruby -I<sidekiq paths> bench/sidekiq_api.rb \
#     min_iterations=3 max_iterations=50 budget=3 minutes=3 warmup=1
#
# One "scrape" = `Stats.new` with `enqueued` (and the other stats), `Queue.all` with `size` and
# `latency` of each queue, `ProcessSet#each`, `Workers#each` and, on 7.x,
# `Metrics::Query#top_jobs(minutes:)` over the same minutes our reader reads. That is the
# equivalent of our poll (our reader also reads histograms, which `top_jobs` does not).
# `ProcessSet.new(false)`: no cleanup, so the API only reads, as we do.
#
# Prints one JSON line: wall and CPU seconds per scrape, and with redis-client (Sidekiq 7) the
# Redis round trips per scrape counted by a client middleware (one per `call` or pipeline).

require "json"
require "logger"
require "sidekiq"
require "sidekiq/api"

Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)
Sidekiq.configure_client { |config| config.redis = {url: ENV.fetch("REDIS_URL")} }
Sidekiq.logger.level = Logger::WARN

opts = ARGV.to_h { |arg| arg.split("=", 2) }
min_iterations = Integer(opts.fetch("min_iterations", "3"))
max_iterations = Integer(opts.fetch("max_iterations", "50"))
budget = Float(opts.fetch("budget", "3"))
minutes = Integer(opts.fetch("minutes", "3"))
warmup = opts.fetch("warmup", "1") == "1"
metrics = Sidekiq::VERSION.split(".").first.to_i >= 7
require "sidekiq/metrics/query" if metrics

module RoundTripCounter
  @count = 0
  class << self
    attr_accessor :count
  end

  def call(command, config)
    RoundTripCounter.count += 1
    super
  end

  def call_pipelined(commands, config)
    RoundTripCounter.count += 1
    super
  end
end
counting = defined?(RedisClient) && RedisClient.respond_to?(:register)
RedisClient.register(RoundTripCounter) if counting

def scrape(minutes, metrics)
  seen = 0
  stats = Sidekiq::Stats.new
  seen += [stats.processed, stats.failed, stats.scheduled_size, stats.retry_size,
    stats.dead_size, stats.processes_size, stats.enqueued, stats.workers_size].sum
  seen += stats.default_queue_latency.to_i
  Sidekiq::Queue.all.each { |queue| seen += queue.size + queue.latency.to_i }
  Sidekiq::ProcessSet.new(false).each { |process| seen += process["busy"].to_i }
  Sidekiq::Workers.new.each { |_process, _thread, _work| seen += 1 }
  if metrics
    result = Sidekiq::Metrics::Query.new.top_jobs(minutes: minutes)
    seen += result.job_results.size
  end
  seen
end

def clock(kind)
  Process.clock_gettime(kind)
end

scrape(minutes, metrics) if warmup # connection, constants, method caches
RoundTripCounter.count = 0
walls = []
cpus = []
trips = []
deadline = clock(Process::CLOCK_MONOTONIC) + budget
while walls.size < min_iterations || (clock(Process::CLOCK_MONOTONIC) < deadline && walls.size < max_iterations)
  before = RoundTripCounter.count
  w0 = clock(Process::CLOCK_MONOTONIC)
  c0 = clock(Process::CLOCK_PROCESS_CPUTIME_ID)
  scrape(minutes, metrics)
  cpus << clock(Process::CLOCK_PROCESS_CPUTIME_ID) - c0
  walls << clock(Process::CLOCK_MONOTONIC) - w0
  trips << RoundTripCounter.count - before
end

puts JSON.generate(
  "sidekiq_version" => Sidekiq::VERSION,
  "ruby_version" => RUBY_VERSION,
  "client" => defined?(RedisClient::VERSION) ? "redis-client #{RedisClient::VERSION}" : "redis-rb #{Redis::VERSION}",
  "wall" => walls,
  "cpu" => cpus,
  "round_trips" => counting ? trips.max : nil,
  "warmup" => warmup
)
