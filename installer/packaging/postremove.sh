#!/bin/sh
# medlake-agent package: the spool in /var/lib/medlake-agent may hold
# unacknowledged patient records, so removal never deletes it; purge it by
# hand once the hub has acknowledged everything.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
