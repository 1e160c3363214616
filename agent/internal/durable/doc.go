// Package durable writes files so that they survive a crash or power loss: data is
// fsynced before it counts as written, and renames are made durable by syncing the
// directory. The agent's spool, quarantine and dead-letter folders rely on it.
package durable
