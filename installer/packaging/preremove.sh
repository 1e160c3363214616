#!/bin/sh
# medlake-agent package: stop and disable on removal, not on upgrade.
# deb passes "remove"/"upgrade", rpm passes the count of remaining installs.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now medlake-agent >/dev/null 2>&1 || true
	fi
	;;
esac
