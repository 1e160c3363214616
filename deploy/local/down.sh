#!/usr/bin/env bash
# down.sh [DIR] -- stop what up.sh started in DIR (default .medlake-dev).
# Data stays in DIR; up.sh DIR starts it again on the same ports when free.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
dir="${1:-.medlake-dev}"
[[ -d "$dir" ]] || { echo "down.sh: no such directory $dir" >&2; exit 1; }
rc=0
for s in mosquitto minio postgres; do
	bash "$here/$s.sh" stop "$dir" || rc=1
done
exit $rc
