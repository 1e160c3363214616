// Package installer installs, controls and runs medlake-agent as an operating
// system service: a Windows service, a systemd unit or a SysV init script.
//
// It wraps github.com/kardianos/service. On systemd it installs a unit that
// this package renders itself (SystemdUnit), so the unit an installer writes,
// the one shipped in the deb/rpm packages (packaging/medlake-agent.service)
// and the one tests check are the same text. It owns no agent logic: the
// agent's main passes its program (service.Interface) to Control.
package installer
