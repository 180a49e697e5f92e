# frozen_string_literal: true

# The next tick of cron lines as fugit (sidekiq-cron's parser) computes it, for
# tests/test_cron_schedule.py. Needs only the fugit gem (Debian 12: ruby-fugit, which
# ruby-sidekiq-cron depends on).
#
#   ruby tests/sidekiq_app/fugit_ticks.rb < [[line, epoch_seconds], ...]
#
# Prints ONE JSON object: fugit's version and, per case, the epoch seconds of
# `Fugit::Cron.parse(line).next_time(from)`, or null when fugit does not parse the line.

require "json"
require "fugit"

cases = JSON.parse($stdin.read)
ticks = cases.map do |line, from|
  cron = Fugit::Cron.parse(line)
  cron&.next_time(Time.at(from).utc)&.to_t&.to_f
end
puts JSON.generate({"fugit_version" => Fugit::VERSION, "ticks" => ticks})
