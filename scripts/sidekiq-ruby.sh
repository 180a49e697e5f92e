#!/usr/bin/env bash
# Run Ruby with one Sidekiq version selected by `ruby -I` load paths (the same paths the
# Python helper tests/support/sidekiq.py uses). REDIS_URL selects the Redis.
#
#   scripts/sidekiq-ruby.sh VERSION server [sidekiq options]   start a server with tests/sidekiq_app/app.rb
#   scripts/sidekiq-ruby.sh VERSION enqueue|truth|cron [name=value ...]   run tests/sidekiq_app/<name>.rb
#   scripts/sidekiq-ruby.sh VERSION flags                     print the -I flags
#   scripts/sidekiq-ruby.sh VERSION [ruby args ...]           anything else goes to ruby
#
# VERSION is 6.4.1 (Debian 12 ruby-sidekiq) or 7.3.2 (.cache/sidekiq-7.3.2, from
# scripts/setup-test-services.sh). Example:
#   REDIS_URL=redis://127.0.0.1:6379/0 scripts/sidekiq-ruby.sh 7.3.2 server -q critical,2 -q default -c 5 -g app
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=${1:?"usage: $0 VERSION server|enqueue|truth|cron|flags|<ruby args>"}
shift

case "$version" in
    6.4.1)
        G=/usr/share/rubygems-integration/all/gems
        LIBS=("$G/sidekiq-6.4.1/lib")   # redis-rb 4.8.0 / connection_pool 2.2.5 via RubyGems
        EXE="$G/sidekiq-6.4.1/bin/sidekiq"
        ;;
    7.3.2)
        G="$ROOT/.cache/sidekiq-7.3.2/usr/share/rubygems-integration/all/gems"
        LIBS=("$G/sidekiq-7.3.2/lib" "$G/redis-client-0.22.2/lib" "$G/connection_pool-2.4.1/lib")
        EXE="$G/sidekiq-7.3.2/bin/sidekiq"
        ;;
    *) echo "unknown Sidekiq version $version (6.4.1 or 7.3.2)" >&2; exit 2 ;;
esac
[[ -f "$EXE" ]] || { echo "Sidekiq $version not installed; run scripts/setup-test-services.sh" >&2; exit 1; }

FLAGS=()
for d in "${LIBS[@]}"; do FLAGS+=(-I "$d"); done

case "${1:-}" in
    flags) printf '%q ' "${FLAGS[@]}"; echo ;;
    server) shift; exec ruby "${FLAGS[@]}" "$EXE" -r "$ROOT/tests/sidekiq_app/app.rb" "$@" ;;
    enqueue|truth|cron) s=$1; shift; exec ruby "${FLAGS[@]}" "$ROOT/tests/sidekiq_app/$s.rb" "$@" ;;
    *) exec ruby "${FLAGS[@]}" "$@" ;;
esac
