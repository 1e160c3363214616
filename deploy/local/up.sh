#!/usr/bin/env bash
# up.sh [DIR] -- start PostgreSQL, MinIO and Mosquitto for development.
#
# All three keep their data and logs under DIR (default .medlake-dev in the
# current directory); their KEY=value settings are written to DIR/stack.env
# (also printed), ready for `set -a; . DIR/stack.env; set +a`.
# Run it again to get the same settings; down.sh DIR stops everything.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
dir="${1:-.medlake-dev}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd -P)"

tmp="$dir/stack.env.tmp"
{
	echo "# medlake dev stack in $dir, written $(date -u +%Y-%m-%dT%H:%M:%SZ) by deploy/local/up.sh"
	bash "$here/postgres.sh" start "$dir"
	bash "$here/minio.sh" start "$dir"
	bash "$here/mosquitto.sh" start "$dir"
} >"$tmp" || {
	echo "up.sh: a server failed to start; stopping the others (logs in $dir/*.log)" >&2
	bash "$here/down.sh" "$dir" || true
	rm -f "$tmp"
	exit 1
}
mv "$tmp" "$dir/stack.env"
cat "$dir/stack.env"
echo "up.sh: settings in $dir/stack.env; stop with: $here/down.sh $dir" >&2
