// Package send streams spooled batches to the hub over MQTT (QoS 1, persistent session) with a
// bounded in-flight window, and turns the hub's application acks into spool deletes or dead-letters.
//
// It also publishes the agent's retained status and last will. It never parses files and never
// decides when a source file is done: it reports each ack to its caller.
package send
