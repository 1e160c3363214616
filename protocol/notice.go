package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Commit notices are the one message that is not between an agent and a hub: a hub
// publishes one on CommitNoticeTopic(table) after each commit of a table, at QoS 0 and
// not retained, and query nodes subscribed to CommitNoticeSubscription refresh that
// table's view at once instead of at their next poll. A lost notice costs only the
// poll interval, so nothing retries them; a forged one costs a refresh that finds
// nothing new. The topic holds three levels under the root where agents' topics hold
// four, so no subscription of agents or hubs matches it.
const (
	noticeLevel = "_lake"
	// KindCommitted is the last level of a commit notice's topic.
	KindCommitted = "committed"
	// CommitNoticeSubscription receives every table's commit notices.
	CommitNoticeSubscription = topicRoot + "/" + noticeLevel + "/+/" + KindCommitted
)

// CommitNotice says a hub committed a snapshot of a table.
type CommitNotice struct {
	Version     string    `json:"v"`
	Table       string    `json:"table"`
	Hub         string    `json:"hub,omitempty"`
	CommittedAt time.Time `json:"committed_at,omitzero"`
}

// CommitNoticeTopic is where hubs publish table's commit notices.
func CommitNoticeTopic(table string) string {
	return topicRoot + "/" + noticeLevel + "/" + table + "/" + KindCommitted
}

// ParseCommitNoticeTopic returns the table a commit notice's topic names.
func ParseCommitNoticeTopic(topic string) (string, error) {
	rest, ok := strings.CutPrefix(topic, topicRoot+"/"+noticeLevel+"/")
	table, ok2 := strings.CutSuffix(rest, "/"+KindCommitted)
	if !ok || !ok2 {
		return "", fmt.Errorf("topic %q: not a commit notice (%s): %w", topic, CommitNoticeSubscription, ErrMalformed)
	}
	if err := ValidateID("table", table); err != nil {
		return "", fmt.Errorf("topic %q: %w", topic, err)
	}
	return table, nil
}

// EncodeCommitNotice sets the version and encodes the notice.
func EncodeCommitNotice(n CommitNotice) ([]byte, error) {
	n.Version = Version
	if err := ValidateID("table", n.Table); err != nil {
		return nil, fmt.Errorf("encoding commit notice: %w", err)
	}
	return json.Marshal(n)
}

// DecodeCommitNotice decodes and checks a commit notice.
func DecodeCommitNotice(b []byte) (CommitNotice, error) {
	var n CommitNotice
	if err := decodeJSON("commit notice", b, &n); err != nil {
		return CommitNotice{}, err
	}
	if err := checkVersion("commit notice of "+n.Table, n.Version); err != nil {
		return CommitNotice{}, err
	}
	if err := ValidateID("table", n.Table); err != nil {
		return CommitNotice{}, fmt.Errorf("decoding commit notice: %w", err)
	}
	return n, nil
}
