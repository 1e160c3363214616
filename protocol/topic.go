package protocol

import (
	"fmt"
	"strings"
)

// Topic kinds. Every topic is "medlake/v1/{tenant}/{facility}/{agent}/{kind}".
const (
	KindBatch  = "batch"  // agent → hub: one batch envelope, QoS 1
	KindAck    = "ack"    // hub → agent: the application ack after the lake commit, QoS 1
	KindStatus = "status" // agent → hub: retained agent status, also the agent's last will
	KindConfig = "config" // hub → agent: configuration pushed to the agent
)

const topicRoot = "medlake/v1"

// HubBatchSubscription is the shared subscription every hub joins, so the broker spreads
// batches over the hubs that are alive.
const HubBatchSubscription = "$share/medlake-hub/" + topicRoot + "/+/+/+/" + KindBatch

// HubStatusSubscription receives every agent's status; each hub sees all of them.
const HubStatusSubscription = topicRoot + "/+/+/+/" + KindStatus

// Topic is a parsed medlake topic.
type Topic struct {
	Tenant, Facility, Agent, Kind string
}

// String returns the topic name.
func (t Topic) String() string {
	return topicRoot + "/" + t.Tenant + "/" + t.Facility + "/" + t.Agent + "/" + t.Kind
}

// BatchTopic is where an agent publishes its batches.
func BatchTopic(tenant, facility, agent string) string {
	return Topic{tenant, facility, agent, KindBatch}.String()
}

// AckTopic is where the hub acknowledges an agent's batches.
func AckTopic(tenant, facility, agent string) string {
	return Topic{tenant, facility, agent, KindAck}.String()
}

// StatusTopic is where an agent publishes its status.
func StatusTopic(tenant, facility, agent string) string {
	return Topic{tenant, facility, agent, KindStatus}.String()
}

// ConfigTopic is where the hub publishes configuration for an agent.
func ConfigTopic(tenant, facility, agent string) string {
	return Topic{tenant, facility, agent, KindConfig}.String()
}

// ParseTopic splits a medlake topic into its parts and validates each id, so a hub can
// address a reply even when the message itself cannot be decoded.
func ParseTopic(topic string) (Topic, error) {
	rest, ok := strings.CutPrefix(topic, topicRoot+"/")
	if !ok {
		return Topic{}, fmt.Errorf("topic %q: not under %s/: %w", topic, topicRoot, ErrMalformed)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 {
		return Topic{}, fmt.Errorf("topic %q: want %s/{tenant}/{facility}/{agent}/{kind}: %w", topic, topicRoot, ErrMalformed)
	}
	t := Topic{Tenant: parts[0], Facility: parts[1], Agent: parts[2], Kind: parts[3]}
	for _, f := range []struct{ kind, v string }{{"tenant", t.Tenant}, {"facility", t.Facility}, {"agent", t.Agent}} {
		if err := ValidateID(f.kind, f.v); err != nil {
			return Topic{}, fmt.Errorf("topic %q: %w", topic, err)
		}
	}
	switch t.Kind {
	case KindBatch, KindAck, KindStatus, KindConfig:
	default:
		return Topic{}, fmt.Errorf("topic %q: unknown kind %q: %w", topic, t.Kind, ErrMalformed)
	}
	return t, nil
}

// ValidateID checks a tenant, facility or agent id: 1–64 characters of [A-Za-z0-9._-].
// The restriction keeps ids safe in topic names (no wildcards or separators), file
// names and SQL identifiers.
func ValidateID(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%s id is empty: %w", kind, ErrMalformed)
	}
	if len(s) > 64 {
		return fmt.Errorf("%s id %q is longer than 64 characters: %w", kind, s, ErrMalformed)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		return fmt.Errorf("%s id %q: character %q not allowed (use A-Z a-z 0-9 . _ -): %w", kind, s, c, ErrMalformed)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("%s id %q not allowed: %w", kind, s, ErrMalformed)
	}
	return nil
}
