// Package spool is the agent's durable on-disk queue of encoded batch frames between
// normalizing and sending: fsynced, bounded, surviving crashes without losing a batch.
//
// It owns the spool and dead-letter directories. It does not know about MQTT or acks:
// the sender deletes a batch (or moves it to dead-letter) once the hub has answered.
package spool
