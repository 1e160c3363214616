package hub

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
)

// TestCommitNoticePublished checks that a commit of new rows publishes a commit notice
// for its table on real mosquitto, and that acking a re-sent batch from the ledger,
// which commits nothing, publishes none.
func TestCommitNoticePublished(t *testing.T) {
	brokerURL := stack.Mosquitto(t)
	h := startHub(t, brokerURL, catalog.Config{DataDir: t.TempDir()})
	notices := make(chan protocol.CommitNotice, 100)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID("notice-watcher").SetCleanSession(true))
	if tok := sub.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { sub.Disconnect(100) })
	tok := sub.Subscribe(protocol.CommitNoticeSubscription, 0, func(_ paho.Client, m paho.Message) {
		table, err := protocol.ParseCommitNoticeTopic(m.Topic())
		if err != nil {
			t.Errorf("notice on topic %q: %v", m.Topic(), err)
			return
		}
		n, err := protocol.DecodeCommitNotice(m.Payload())
		if err != nil || n.Table != table || m.Retained() {
			t.Errorf("notice %q on %s: %+v, %v (retained %v)", m.Payload(), m.Topic(), n, err, m.Retained())
			return
		}
		notices <- n
	})
	if tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	ag := newAgent(t, brokerURL, goldenTopic)
	a1 := labFrame(t, h.def, goldenTopic, "fileA", 1, 10, nil)
	id := batchID(t, a1)
	ag.send(a1)
	ag.await(id)
	select {
	case n := <-notices:
		if n.Table != "lab_results" || n.Hub == "" || time.Since(n.CommittedAt) > time.Minute {
			t.Errorf("notice = %+v, want lab_results from a hub, just now", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no commit notice within 10s of the ack")
	}

	ag.send(a1)
	ag.await(id)
	select {
	case n := <-notices:
		if n.Table == "lab_results" {
			t.Errorf("a re-sent batch acked from the ledger published notice %+v", n)
		}
	case <-time.After(2 * time.Second):
	}
}
