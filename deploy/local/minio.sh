#!/usr/bin/env bash
# minio.sh start|stop|env DIR -- a MinIO S3 server on 127.0.0.1.
#
# start: builds the pinned MinIO into ${MEDLAKE_TOOLS:-$HOME/.cache/medlake/bin}
# when missing (once, ~13 min on 2 cores), starts it on a free port (the
# previous one when still free) with its drives under DIR/minio, waits for
# /minio/health/live, creates the bucket and prints
#   S3_ENDPOINT S3_HOST S3_PORT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION S3_BUCKET S3_DRIVES
# as KEY=value lines. Idempotent while running.
#   MINIO_DRIVES=4     erasure-coded set of 4 drives in one process (default 1)
#   MINIO_BUCKET=name  bucket to create (default medlake)
# stop: stops exactly the server recorded in DIR/minio.pid.
set -euo pipefail
SCRIPT_NAME=minio.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REGION=us-east-1
ACCESS_KEY=medlake

usage() { die "usage: $0 start|stop|env DIR"; }
[[ $# == 2 ]] || usage
action=$1
dir=$(abs_dir "$2")
envfile="$dir/minio.env"
pidfile="$dir/minio.pid"
log="$dir/minio.log"

print_env() {
	grep -E '^S3_[A-Z_]+=' "$envfile"
}

# http_status URL [curl args...] prints the HTTP status code (000 when the
# connection fails).
http_status() {
	local url=$1
	shift
	curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" 2>/dev/null || true
}

start() {
	local pid
	if pid=$(running_pid "$pidfile" "$dir/minio/"); then
		print_env
		return
	fi
	command -v curl >/dev/null || apt_install curl ca-certificates
	local bin
	bin=$(ensure_minio_binary)

	local drives=${MINIO_DRIVES:-$(env_get "$envfile" S3_DRIVES)}
	drives=${drives:-1}
	local prev_drives
	prev_drives=$(env_get "$envfile" S3_DRIVES)
	if [[ -n "$prev_drives" && "$prev_drives" != "$drives" ]]; then
		die "$dir/minio holds a $prev_drives-drive setup; MINIO_DRIVES=$drives needs a new DIR"
	fi
	local volumes extra_env=()
	case "$drives" in
	1)
		mkdir -p "$dir/minio/data"
		volumes="$dir/minio/data"
		;;
	4)
		mkdir -p "$dir"/minio/data{1,2,3,4}
		volumes="$dir/minio/data{1...4}"
		# Four drives on one root disk are refused without CI/CD mode.
		extra_env=(MINIO_CI_CD=1)
		;;
	*) die "MINIO_DRIVES must be 1 or 4, not $drives" ;;
	esac

	local secret bucket
	secret=$(env_get "$envfile" S3_SECRET_KEY)
	[[ -n "$secret" ]] || secret=$(random_secret)
	bucket=${MINIO_BUCKET:-$(env_get "$envfile" S3_BUCKET)}
	bucket=${bucket:-medlake}

	local port cport attempt i ok
	port=$(env_get "$envfile" S3_PORT)
	for attempt in 1 2 3 4 5 6 7 8; do
		port=$(pick_port "$port")
		cport=$(free_port)
		[[ "$cport" != "$port" ]] || cport=$(free_port)
		env MINIO_ROOT_USER="$ACCESS_KEY" MINIO_ROOT_PASSWORD="$secret" \
			MINIO_REGION="$REGION" MINIO_BROWSER=off MINIO_UPDATE=off \
			"${extra_env[@]}" \
			"$bin" server --quiet --address "127.0.0.1:$port" \
			--console-address "127.0.0.1:$cport" "$volumes" \
			</dev/null >>"$log" 2>&1 3<&- 9>&- &
		pid=$!
		ok=""
		for i in $(seq 1 1200); do
			pid_alive "$pid" || break
			if [[ "$(http_status "http://127.0.0.1:$port/minio/health/live")" == 200 ]]; then
				ok=1
				break
			fi
			sleep 0.1
		done
		[[ -n "$ok" ]] && break
		if pid_alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
			tail -n 20 "$log" >&2
			die "minio (pid $pid) not live on 127.0.0.1:$port within 120s (log: $log)"
		fi
		say "minio exited on port $port; retrying on another (attempt $attempt)"
		port=""
	done
	[[ -n "$ok" ]] || {
		tail -n 20 "$log" >&2
		die "minio failed to start (log: $log)"
	}
	echo "$pid" >"$pidfile"
	start_watchdog minio "$dir" "$pid"

	# live only means the process serves HTTP; wait until the drives have
	# write quorum before creating the bucket.
	for i in $(seq 1 600); do
		[[ "$(http_status "http://127.0.0.1:$port/minio/health/ready")" == 200 ]] && break
		sleep 0.1
	done
	local code
	for i in $(seq 1 50); do
		code=$(http_status "http://127.0.0.1:$port/$bucket" -X PUT \
			--aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$secret")
		# 409: the bucket survives from an earlier start of this DIR.
		[[ "$code" == 200 || "$code" == 409 ]] && break
		sleep 0.2
	done
	[[ "$code" == 200 || "$code" == 409 ]] || die "creating bucket $bucket failed: HTTP $code (log: $log)"

	cat >"$envfile.tmp" <<EOF
S3_ENDPOINT=http://127.0.0.1:$port
S3_HOST=127.0.0.1
S3_PORT=$port
S3_ACCESS_KEY=$ACCESS_KEY
S3_SECRET_KEY=$secret
S3_REGION=$REGION
S3_BUCKET=$bucket
S3_DRIVES=$drives
EOF
	chmod 600 "$envfile.tmp"
	mv "$envfile.tmp" "$envfile"
	print_env
}

stop() {
	stop_watchdog minio "$dir"
	local pid
	if pid=$(running_pid "$pidfile" "$dir/minio/"); then
		stop_pid "$pid" TERM minio
		say "stopped minio (pid $pid)"
	else
		say "minio in $dir is not running"
	fi
	rm -f "$pidfile"
}

case "$action" in
start) start ;;
stop) stop ;;
env) print_env ;;
*) usage ;;
esac
