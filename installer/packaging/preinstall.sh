#!/bin/sh
# medlake-agent package: create the unprivileged account the unit runs as.
set -e
if ! getent group medlake-agent >/dev/null 2>&1; then
	groupadd --system medlake-agent 2>/dev/null || addgroup --system medlake-agent
fi
if ! getent passwd medlake-agent >/dev/null 2>&1; then
	useradd --system --gid medlake-agent --home-dir /var/lib/medlake-agent --no-create-home \
		--shell /usr/sbin/nologin --comment "medlake agent" medlake-agent 2>/dev/null ||
		adduser --system --ingroup medlake-agent --home /var/lib/medlake-agent --no-create-home \
			--shell /usr/sbin/nologin medlake-agent
fi
