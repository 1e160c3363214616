# shellcheck shell=bash
# Shared helpers for the local stack scripts (sourced, not executed).
#
# Contract kept by every script: stdout carries only KEY=value lines; progress
# and errors go to stderr; every background process has stdin, stdout and
# stderr redirected and no inherited lock fds, so a caller reading our stdout
# through a pipe (go test, $(...)) sees EOF as soon as the script exits.

MEDLAKE_TOOLS="${MEDLAKE_TOOLS:-$HOME/.cache/medlake/bin}"
MINIO_MODULE="github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

say() { printf '%s: %s\n' "${SCRIPT_NAME:-stack}" "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

# abs_dir DIR creates DIR and prints its absolute path.
abs_dir() {
	mkdir -p "$1" || die "cannot create directory $1"
	(cd "$1" && pwd -P)
}

# port_open PORT: is something accepting TCP connections on 127.0.0.1:PORT?
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port prints a TCP port on 127.0.0.1 that is free right now. Another
# process may take it before we bind, so callers retry on bind failure.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
		return
	fi
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 40000))
		if ! port_open "$p"; then
			echo "$p"
			return
		fi
	done
	die "no free TCP port found on 127.0.0.1"
}

# pick_port PREFERRED: PREFERRED if it is set and free (a restart keeps the
# address clients already know), otherwise a fresh free port.
pick_port() {
	if [[ -n "${1:-}" ]] && ! port_open "$1"; then
		echo "$1"
	else
		free_port
	fi
}

# env_get FILE KEY prints KEY's value from a KEY=value file ("" if absent).
env_get() {
	[[ -f "$1" ]] || return 0
	sed -n "s/^$2=//p" "$1" | tail -n 1
}

random_secret() {
	# 24 alphanumerics: URL-safe, so it can sit in a DSN unescaped.
	LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24 || true
}

# pid_alive PID
pid_alive() {
	[[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null
}

# pid_matches PID NEEDLE: the process' command line contains NEEDLE. Guards
# against signalling an unrelated process that reused a recorded pid.
pid_matches() {
	local cmdline
	cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ "$cmdline" == *"$2"* ]]
}

# running_pid PIDFILE NEEDLE prints the recorded pid if that process is alive
# and still the one we started.
running_pid() {
	local pid
	[[ -f "$1" ]] || return 1
	pid=$(head -n 1 "$1")
	pid_alive "$pid" && pid_matches "$pid" "$2" && echo "$pid"
}

# stop_pid PID SIGNAL NAME: signal exactly PID and wait for it to exit,
# escalating to SIGKILL after 30 s.
stop_pid() {
	local pid=$1 sig=$2 name=$3 i
	kill "-$sig" "$pid" 2>/dev/null || return 0
	for i in $(seq 1 300); do
		pid_alive "$pid" || return 0
		# A zombie whose parent is gone will be reaped by init; it no longer
		# holds ports or files.
		[[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && return 0
		sleep 0.1
	done
	say "$name (pid $pid) did not stop after SIG$sig in 30s; sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for i in $(seq 1 50); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	die "$name (pid $pid) survived SIGKILL"
}

# apt_install PKG...: install Debian packages (root only), running
# apt-get update once first when the package lists are empty or a plain
# install fails. Concurrent callers (parallel test binaries) serialize on a lock.
apt_install() {
	[[ "$(id -u)" == 0 ]] || die "missing $*; install them (apt-get install -y $*) or run as root"
	command -v apt-get >/dev/null || die "missing $* and no apt-get to install them"
	local lock=/var/lock/medlake-apt.lock
	(
		flock -w 900 9 || die "timed out waiting for $lock"
		export DEBIAN_FRONTEND=noninteractive
		local opts=(-y -q -o DPkg::Lock::Timeout=600 --no-install-recommends)
		say "installing $* (apt-get)"
		if [[ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]] ||
			! apt-get install "${opts[@]}" "$@" >&2; then
			apt-get update -q -o DPkg::Lock::Timeout=600 >&2
			apt-get install "${opts[@]}" "$@" >&2
		fi
	) 9>"$lock"
}

# ensure_minio_binary prints the path of the pinned MinIO server binary,
# building it once into $MEDLAKE_TOOLS (about 13 minutes on 2 cores).
ensure_minio_binary() {
	local bin="$MEDLAKE_TOOLS/minio"
	if [[ -x "$bin" ]]; then
		echo "$bin"
		return
	fi
	command -v go >/dev/null || die "MinIO is not in $MEDLAKE_TOOLS and go is not on PATH to build it"
	mkdir -p "$MEDLAKE_TOOLS"
	(
		flock -w 3600 9 || die "timed out waiting for another MinIO build ($MEDLAKE_TOOLS/.minio.lock)"
		if [[ ! -x "$bin" ]]; then
			say "building MinIO into $MEDLAKE_TOOLS (go install $MINIO_MODULE; ~13 min on 2 cores, once)"
			local start=$SECONDS
			# Build into a temp GOBIN and rename, so a killed build never
			# leaves a half-written binary that looks usable.
			local tmp
			tmp=$(mktemp -d "$MEDLAKE_TOOLS/.build.XXXXXX")
			if ! GOBIN="$tmp" GOFLAGS= go install "$MINIO_MODULE" >&2; then
				rm -rf "$tmp"
				die "building MinIO failed"
			fi
			mv "$tmp/minio" "$bin"
			rm -rf "$tmp"
			say "built MinIO in $((SECONDS - start))s"
		fi
	) 9>"$MEDLAKE_TOOLS/.minio.lock"
	echo "$bin"
}

# start_watchdog NAME DIR SERVICE_PID: when MEDLAKE_STACK_OWNER_PID is set,
# a detached watcher runs "<script> stop DIR" once the owner (a go test
# binary) exits for any reason, including a crash or a test timeout, so no
# server outlives the test run. With MEDLAKE_STACK_OWNER_FD=3 the owner also
# hands us the read end of a pipe whose write end only it holds: EOF on it is
# the owner's exit, seen at once instead of by polling. A normal stop kills
# the watcher's process group first.
start_watchdog() {
	local name=$1 dir=$2 spid=$3 owner=${MEDLAKE_STACK_OWNER_PID:-}
	[[ -n "$owner" ]] || return 0
	pid_alive "$owner" || die "MEDLAKE_STACK_OWNER_PID=$owner is not running"
	local script ownerfd=${MEDLAKE_STACK_OWNER_FD:-}
	[[ "$ownerfd" == 3 && -e /proc/self/fd/3 ]] || ownerfd=""
	script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$name.sh"
	# shellcheck disable=SC2016
	setsid bash -c '
		owner=$1 spid=$2 script=$3 dir=$4 ownerfd=$5
		if [ -n "$ownerfd" ]; then
			cat <&3 >/dev/null
		fi
		exec 3<&-
		while kill -0 "$owner" 2>/dev/null; do sleep 1; done
		MEDLAKE_STACK_WATCHDOG=1 bash "$script" stop "$dir"
		# The owner created DIR for this run only (marker file): remove it.
		if [ -f "$dir/.medlake-stack-owned" ]; then rm -rf "$dir"; fi
	' medlake-watchdog "$owner" "$spid" "$script" "$dir" "$ownerfd" </dev/null >/dev/null 2>&1 9>&- &
	echo $! >"$dir/$name.watchdog.pid"
}

stop_watchdog() {
	local name=$1 dir=$2 pid
	[[ -n "${MEDLAKE_STACK_WATCHDOG:-}" ]] && return 0
	if pid=$(running_pid "$dir/$name.watchdog.pid" medlake-watchdog); then
		# setsid made it a process group leader: the group is it and its cat.
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/$name.watchdog.pid"
}
