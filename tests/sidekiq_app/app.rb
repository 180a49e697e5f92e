# frozen_string_literal: true

# A tiny Sidekiq application for the integration and conformance tests.
#
# It runs unchanged under Sidekiq 6.4.1 (Debian 12), 7.3.2 (Debian 13, unpacked into
# .cache/sidekiq-7.3.2; the version is chosen by the `ruby -I` load path) and 8.1.x (Ruby 3.3
# in the Debian sid root, .cache/sid-root, run through scripts/in-sid-root.sh).
# Redis comes from REDIS_URL (default redis://127.0.0.1:6379/0).
#
# Server:  ruby -I<paths> <sidekiq exe> -r tests/sidekiq_app/app.rb -q critical,2 -q default -c 5 -g tag
# Client:  the other scripts in this directory `require_relative "app"`.

require "json"
require "sidekiq"

# redis-rb 4.8 (used by 6.4.1) warns about Sidekiq 6.4's BRPOP/SADD calls on every fetch.
Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)

REDIS_URL = ENV.fetch("REDIS_URL", "redis://127.0.0.1:6379/0")

Sidekiq.configure_server do |config|
  config.redis = {url: REDIS_URL}
end

Sidekiq.configure_client do |config|
  config.redis = {url: REDIS_URL}
end

# Servers log at INFO; client scripts (enqueue/truth/cron) only warn, so their stdout is
# just the JSON they print. SIDEKIQ_LOG_LEVEL overrides both.
Sidekiq.logger.level = Logger.const_get(ENV.fetch("SIDEKIQ_LOG_LEVEL", Sidekiq.server? ? "INFO" : "WARN").upcase)

module SidekiqApp
  def self.major
    Sidekiq::VERSION.split(".").first.to_i
  end

  # sidekiq-cron 1.8.0 is the Debian 12 package and works only with Sidekiq 6.
  def self.cron_supported?
    major == 6
  end

  # The class Rails' ActiveJob adapter pushes: renamed in Sidekiq 8.0 (sidekiq/rails.rb).
  def self.active_job_wrapper
    (major >= 8) ? "Sidekiq::ActiveJob::Wrapper" : "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"
  end
end

# `Sidekiq::Job` is the name from 6.3.0 on; `Sidekiq::Worker` is only a compatibility alias.

class FastJob
  include Sidekiq::Job
  sidekiq_options queue: "default"

  def perform(*_args)
    sleep 0.01
  end
end

class MediumJob
  include Sidekiq::Job
  sidekiq_options queue: "default"

  def perform(*_args)
    sleep 0.2
  end
end

# Stays busy for `seconds` (default 60) so a running job can be observed.
class SlowJob
  include Sidekiq::Job
  sidekiq_options queue: "default"

  def perform(seconds = 60, *_args)
    sleep seconds.to_f
  end
end

# Default retry policy (25 retries), so the failure lands in the `retry` set. The first
# retry is pushed an hour out so the retry set and the failure counters stay still while a
# test compares numbers (Sidekiq's own delay would be 15-25 s).
class FailingJob
  include Sidekiq::Job
  sidekiq_options queue: "default"
  sidekiq_retry_in { |_count, _exception| 3600 }

  def perform(*_args)
    raise ArgumentError, "FailingJob always fails"
  end
end

# retry: 0 means "no retries, but send to the morgue": with Sidekiq's JobRetry, 0 is truthy,
# `retry_count 0 < max 0` is false, so retries_exhausted -> send_to_morgue (unless dead: false).
# (retry: false would discard the job instead.)
class DeadJob
  include Sidekiq::Job
  sidekiq_options queue: "default", retry: 0

  def perform(*_args)
    raise RuntimeError, "DeadJob goes straight to the dead set"
  end
end

module Billing
  class InvoiceJob
    include Sidekiq::Job
    sidekiq_options queue: "billing_within_5_minutes"

    # `seconds` lets a test keep a namespaced job running (enqueue.rb's billing_slow).
    def perform(_number = 0, seconds = 0.01, *_args)
      sleep seconds.to_f
    end
  end
end

# Stand-ins for Rails' ActiveJob adapter so raw-pushed ActiveJob-style payloads
# ("class" => SidekiqApp.active_job_wrapper, "wrapped" => "WrappedMailerJob") really execute.
# args[0] is the ActiveJob serialization; arguments[0], if numeric, is seconds to sleep.
module ActiveJob
  module QueueAdapters
    class SidekiqAdapter
      class JobWrapper
        include Sidekiq::Job

        def perform(job_data = {})
          seconds = Array(job_data.is_a?(Hash) ? job_data["arguments"] : nil).first
          sleep seconds.to_f if seconds.is_a?(Numeric)
        end
      end
    end
  end
end

# Sidekiq 8's name for the same wrapper (defined by sidekiq/rails.rb only under Rails).
if SidekiqApp.major >= 8
  module Sidekiq
    module ActiveJob
      Wrapper = ::ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper unless const_defined?(:Wrapper)
    end
  end
end

# The class that ActiveJob payloads name in "wrapped"; never run directly.
class WrappedMailerJob
  def perform(*_args); end
end

# Pushed by cron.rb's schedule (Sidekiq 6 only).
class CronTickJob
  include Sidekiq::Job
  sidekiq_options queue: "default"

  def perform(*_args)
    sleep 0.01
  end
end

# A server started with SIDEKIQ_APP_CRON=1 also runs sidekiq-cron's poller (6.4.1 only).
if ENV["SIDEKIQ_APP_CRON"] == "1" && SidekiqApp.cron_supported?
  require "sidekiq-cron"
  Sidekiq.options[:cron_poll_interval] = Integer(ENV.fetch("SIDEKIQ_APP_CRON_POLL", "30"))
end

# SIDEKIQ_APP_POLL_AVERAGE=<seconds> sets Sidekiq's `poll_interval_average`: the scheduler (and
# sidekiq-cron's poller, a subclass) then skips its 10 s INITIAL_WAIT and sleeps only 0-5 s
# before the first poll (v6.4.1 lib/sidekiq/scheduled.rb:195-203), so a test sees a cron tick
# a few seconds after boot instead of 10-15 s.
if (average = ENV["SIDEKIQ_APP_POLL_AVERAGE"])
  Sidekiq.configure_server do |config|
    if SidekiqApp.major == 6
      Sidekiq.options[:poll_interval_average] = Float(average)
    else
      config[:poll_interval_average] = Float(average)
    end
  end
end

# SIDEKIQ_APP_NO_SCHEDULER=1: the scheduler thread never starts (`Launcher#run` calls
# `Poller#start`, `#terminate` copes with no thread: v6.4.1 lib/sidekiq/scheduled.rb:83-104,
# the same in 7.x and 8.x). So a process that stays awake (not quiet) neither moves scheduled or
# retry jobs nor prunes the `processes` set (6.4.1's scheduler builds a cleaning `ProcessSet`
# on every 10th wait, the first included: v6.4.1 lib/sidekiq/scheduled.rb:184-193) while a test
# compares numbers.
if ENV["SIDEKIQ_APP_NO_SCHEDULER"] == "1"
  require "sidekiq/scheduled"
  Sidekiq::Scheduled::Poller.prepend(Module.new { def start = nil })
end
