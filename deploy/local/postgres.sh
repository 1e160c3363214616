#!/usr/bin/env bash
# postgres.sh start|stop|env DIR -- a throwaway PostgreSQL 15 on 127.0.0.1.
#
# start: installs postgresql-15 when missing, initializes DIR/postgres (once),
# starts it on a free port (the previous one when still free) and prints
#   PG_HOST PG_PORT PG_USER PG_PASSWORD PG_DATABASE PG_DSN
# as KEY=value lines. Idempotent: a running instance just prints its values.
# stop: fast shutdown of exactly the postmaster recorded in DIR/postgres.pid.
#
# PostgreSQL stands in for CockroachDB here, so it runs with fsync off unless
# MEDLAKE_PG_FSYNC=on: it holds test and dev data only. MEDLAKE_PG_SHARED_BUFFERS
# (default 64MB) sizes its buffer cache, for benchmarks.
set -euo pipefail
SCRIPT_NAME=postgres.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_USER=medlake

usage() { die "usage: $0 start|stop|env DIR"; }
[[ $# == 2 ]] || usage
action=$1
dir=$(abs_dir "$2")
envfile="$dir/postgres.env"
pidfile="$dir/postgres.pid"
log="$dir/postgres.log"

# as_pg runs a command as the postgres user when we are root (initdb and
# postgres refuse to run as root), directly otherwise.
as_pg() {
	if [[ "$(id -u)" == 0 ]]; then
		setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=-all \
			env HOME=/var/lib/postgresql "$@"
	else
		"$@"
	fi
}

# data_root picks where the cluster lives: DIR/postgres when the postgres
# user can reach it, otherwise (DIR under a 0700 root-owned directory such as
# /root or a go test TempDir) a postgres-owned directory in /var/tmp that
# DIR/postgres links to and stop/remove clean up.
data_root() {
	local root="$dir/postgres"
	if [[ -L "$root" ]]; then
		readlink "$root"
		return
	fi
	mkdir -p "$root"
	if [[ "$(id -u)" == 0 ]]; then
		chown postgres:postgres "$root"
		chmod 0700 "$root"
		if ! as_pg test -w "$root"; then
			rmdir "$root"
			local ext
			ext=$(mktemp -d /var/tmp/medlake-pg.XXXXXX)
			chown postgres:postgres "$ext"
			ln -s "$ext" "$root"
			say "postgres user cannot reach $dir; keeping the cluster in $ext (linked from $root)"
			root=$ext
		fi
	fi
	echo "$root"
}

# cluster_root is where an existing cluster lives (see data_root).
cluster_root() {
	if [[ -L "$dir/postgres" ]]; then readlink "$dir/postgres"; else echo "$dir/postgres"; fi
}

print_env() {
	grep -E '^PG_[A-Z_]+=' "$envfile"
}

start() {
	local pid
	if pid=$(running_pid "$pidfile" "$(cluster_root)/data"); then
		print_env
		return
	fi
	if [[ ! -x "$PG_BIN/pg_ctl" ]]; then
		apt_install postgresql-15
	fi
	[[ -x "$PG_BIN/pg_ctl" ]] || die "no pg_ctl in $PG_BIN after installing postgresql-15"

	local root data password
	root=$(data_root)
	data="$root/data"
	password=$(env_get "$envfile" PG_PASSWORD)
	if [[ ! -f "$data/PG_VERSION" ]]; then
		[[ -n "$password" ]] || password=$(random_secret)
		local pwfile="$root/pwfile"
		(umask 077 && printf '%s\n' "$password" >"$pwfile")
		[[ "$(id -u)" == 0 ]] && chown postgres:postgres "$pwfile"
		say "initializing cluster in $data"
		rm -rf "$data"
		if ! as_pg "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --pwfile="$pwfile" \
			--auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$log" 2>&1; then
			rm -f "$pwfile"
			tail -n 20 "$log" >&2
			die "initdb failed (log: $log)"
		fi
		rm -f "$pwfile"
	fi
	[[ -n "$password" ]] || die "cluster in $data exists but $envfile has no PG_PASSWORD"

	local fsync=${MEDLAKE_PG_FSYNC:-off}
	local port attempt
	port=$(env_get "$envfile" PG_PORT)
	for attempt in 1 2 3 4 5 6 7 8; do
		port=$(pick_port "$port")
		local before
		before=$(wc -l <"$log" 2>/dev/null || echo 0)
		# No unix socket: paths under test temp dirs exceed its 107-byte limit,
		# and everything here talks TCP on 127.0.0.1 anyway.
		local opts="-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' \
-c fsync=$fsync -c synchronous_commit=$fsync -c full_page_writes=$fsync \
-c max_connections=300 -c shared_buffers=${MEDLAKE_PG_SHARED_BUFFERS:-64MB}"
		# The log is opened by this (root) shell and inherited, so it can live
		# in DIR even when postgres cannot reach DIR itself.
		if as_pg "$PG_BIN/pg_ctl" start -D "$data" -w -t 120 -s -o "$opts" \
			</dev/null >>"$log" 2>&1 3<&- 9>&-; then
			break
		fi
		if tail -n "+$((before + 1))" "$log" | grep -q -e 'could not bind' -e 'could not create any TCP/IP sockets'; then
			say "port $port taken; retrying on another (attempt $attempt)"
			port=""
			continue
		fi
		tail -n 30 "$log" >&2
		die "pg_ctl start failed (log: $log)"
	done
	pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null) || die "no postmaster.pid in $data after start"
	pid_alive "$pid" || die "postgres started but pid $pid is gone (log: $log)"
	echo "$pid" >"$pidfile"

	local i
	for i in $(seq 1 300); do
		if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres; then
			break
		fi
		pid_alive "$pid" || die "postgres exited during startup (log: $log)"
		sleep 0.1
	done
	"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" || die "postgres on 127.0.0.1:$port not ready after 30s (log: $log)"

	cat >"$envfile.tmp" <<EOF
PG_HOST=127.0.0.1
PG_PORT=$port
PG_USER=$PG_USER
PG_PASSWORD=$password
PG_DATABASE=postgres
PG_DSN=postgres://$PG_USER:$password@127.0.0.1:$port/postgres?sslmode=disable
EOF
	chmod 600 "$envfile.tmp"
	mv "$envfile.tmp" "$envfile"
	start_watchdog postgres "$dir" "$pid"
	print_env
}

stop() {
	stop_watchdog postgres "$dir"
	local pid
	if pid=$(running_pid "$pidfile" "$(cluster_root)/data"); then
		# SIGINT is PostgreSQL's fast shutdown: roll back, checkpoint, exit.
		stop_pid "$pid" INT postgres
		say "stopped postgres (pid $pid)"
	else
		say "postgres in $dir is not running"
	fi
	rm -f "$pidfile"
	# The /var/tmp fallback is ours alone; remove it with the instance's dir
	# link so nothing outlives DIR.
	if [[ -L "$dir/postgres" && -f "$dir/.medlake-stack-owned" ]]; then
		rm -rf "$(readlink "$dir/postgres")" "$dir/postgres"
	fi
}

case "$action" in
start) start ;;
stop) stop ;;
env) print_env ;;
*) usage ;;
esac
