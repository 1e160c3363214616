package hub

import (
	"time"

	"github.com/medlake/medlake/protocol"
)

// noticeCommitted tells query nodes that the committer's table has a new snapshot.
// Called from run after a commit of new rows.
func (c *committer) noticeCommitted() {
	if c.notice != nil {
		c.notice(c.table)
	}
}

// publishCommitNotice publishes a commit notice for table (protocol.CommitNotice) at
// QoS 0, not retained, without waiting: query nodes refresh the table at once, and a
// notice the broker never delivers costs them only their poll interval.
func (in *Ingester) publishCommitNotice(table string) {
	in.mu.Lock()
	client := in.client
	in.mu.Unlock()
	if client == nil || !client.IsConnectionOpen() {
		return
	}
	payload, err := protocol.EncodeCommitNotice(protocol.CommitNotice{Table: table, Hub: in.cfg.ClientID, CommittedAt: time.Now().UTC()})
	if err != nil {
		in.log.Warn("encoding commit notice", "table", table, "err", err)
		return
	}
	client.Publish(protocol.CommitNoticeTopic(table), 0, false, payload)
}
