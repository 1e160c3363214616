// Package broker runs the MQTT broker embedded in the hub (mochi-mqtt) for single-node
// deployments that have no external broker; production uses a broker cluster instead.
//
// It authenticates clients and, optionally, persists sessions across restarts.
package broker
