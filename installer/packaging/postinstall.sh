#!/bin/sh
# medlake-agent package: register the unit. The agent is not started here:
# it needs /etc/medlake-agent/agent.yaml (see agent.yaml.example) first.
set -e
install -d -m 0700 -o medlake-agent -g medlake-agent /var/lib/medlake-agent
chown root:medlake-agent /etc/medlake-agent /etc/medlake-agent/feeds 2>/dev/null || true
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	# An upgrade restarts a running agent; it resumes from its spool.
	if systemctl is-active --quiet medlake-agent; then
		systemctl restart medlake-agent || true
	fi
fi
if [ ! -f /etc/medlake-agent/agent.yaml ]; then
	echo "medlake-agent: write /etc/medlake-agent/agent.yaml (see agent.yaml.example), then: systemctl enable --now medlake-agent"
fi
