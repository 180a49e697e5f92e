# frozen_string_literal: true

# Load sidekiq-cron jobs into Redis and print ONE JSON object with what sidekiq-cron's own API
# (`Sidekiq::Cron::Job.all`) then reads back. Sidekiq 6.4.1 + sidekiq-cron 1.8.0 (Debian 12)
# only; under Sidekiq 7 it prints {"supported": false} and exits 0.
#
#   ruby -I<paths> tests/sidekiq_app/cron.rb [due_now=1] [load=0]
#
# `Job#save` records the current minute's tick as already enqueued ("don't enque right after
# scheduler poller starts"), so a fresh job first fires at the next minute boundary, up to 60 s
# away. `due_now=1` deletes those `cron_job:<name>:enqueued` markers, as if the jobs had been
# loaded in an earlier minute: the first cron poll then enqueues the current tick.
# `load=0` loads nothing: it only reads the jobs back.
#
# The jobs are only *enqueued* by a server started with SIDEKIQ_APP_CRON=1 (see app.rb;
# poll interval from SIDEKIQ_APP_CRON_POLL, default 30 s).

require_relative "app"

unless SidekiqApp.cron_supported?
  puts JSON.generate({"supported" => false, "sidekiq_version" => Sidekiq::VERSION})
  exit 0
end

require "sidekiq-cron"
require "sidekiq/cron/version"

JOBS = {
  "every_minute" => {"class" => "CronTickJob", "cron" => "* * * * *", "args" => ["tick"],
                     "description" => "test tick every minute"},
  # The same minute in another zone: fugit's time-zone suffix.
  "every_minute_berlin" => {"class" => "CronTickJob", "cron" => "* * * * * Europe/Berlin"},
  "hourly_disabled" => {"class" => "FastJob", "cron" => "0 * * * *", "status" => "disabled"}
}.freeze

opts = ARGV.to_h { |a| a.split("=", 2) }
unless opts["load"] == "0"
  errors = Sidekiq::Cron::Job.load_from_hash!(JOBS.transform_values(&:dup))
  abort("sidekiq-cron rejected jobs: #{errors.inspect}") unless errors.empty?
  # `status` in the hash is ignored by 1.8.0's constructor; apply it explicitly.
  Sidekiq::Cron::Job.find("hourly_disabled")&.disable!
  if opts["due_now"] == "1"
    Sidekiq.redis { |conn| JOBS.each_key { |name| conn.del("cron_job:#{name}:enqueued") } }
  end
end

puts JSON.generate({
  "supported" => true,
  "sidekiq_version" => Sidekiq::VERSION,
  "sidekiq_cron_version" => Sidekiq::Cron::VERSION,
  "jobs" => Sidekiq::Cron::Job.all.map do |j|
    {"name" => j.name, "klass" => j.klass, "cron" => j.cron, "status" => j.status,
     "enabled" => j.enabled?, "last_enqueue_time" => j.last_enqueue_time&.to_s,
     "last_enqueue_epoch" => j.last_enqueue_time&.to_f}
  end
})
