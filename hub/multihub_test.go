package hub

import (
	"fmt"
	"testing"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
)

// TestTwoHubsOneTable runs two hubs on one catalog behind the shared subscription. They
// commit to the same table concurrently, and every batch is sent twice (an agent
// re-send after its ack timeout can reach the other hub): each batch must be in the
// table exactly once.
func TestTwoHubsOneTable(t *testing.T) {
	brokerURL := embeddedBroker(t)
	catCfg := catalog.Config{DataDir: t.TempDir()}
	h1 := startHubID(t, brokerURL, catCfg, "hub-a")
	startHubID(t, brokerURL, catCfg, "hub-b")
	def := h1.def

	const agents, files = 4, 10
	total := 0
	want := map[string]int64{}
	for a := range agents {
		topic := protocol.Topic{Tenant: "t0001", Facility: fmt.Sprintf("f%06d", a), Agent: fmt.Sprintf("agent-%d", a), Kind: protocol.KindBatch}
		ag := newAgent(t, brokerURL, topic)
		var frames [][]byte
		var ids []string
		for f := range files {
			n := 10 + f
			fr := labFrame(t, def, topic, fmt.Sprintf("agent%d-file%d", a, f), 1, n, nil)
			frames = append(frames, fr)
			id := batchID(t, fr)
			ids = append(ids, id)
			want[id] = int64(n)
			total += n
		}
		ag.send(frames...)
		ag.send(frames...)
		ag.await(ids...)
		// Second round of acks (for the re-sends) may still be in flight; what matters
		// is what the table holds.
	}
	n, perBatch, _ := scanTable(t, h1.cat, "lab_results")
	if n != int64(total) {
		t.Errorf("table has %d rows, want %d", n, total)
	}
	for id, rows := range want {
		if perBatch[id] != rows {
			t.Errorf("batch %s has %d rows in the table, want %d", id, perBatch[id], rows)
		}
	}
}
