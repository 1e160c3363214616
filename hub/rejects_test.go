package hub

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
	"github.com/medlake/medlake/query/engine"
)

// TestRejectsTable sends the golden reject batch as an agent would: the hub creates the
// rejects table like any table, appends it once however often it is re-sent, and the
// query engine lists and reads it. A quarantine event in an agent status is counted.
func TestRejectsTable(t *testing.T) {
	brokerURL := embeddedBroker(t)
	h := startHub(t, brokerURL, catalog.Config{DataDir: t.TempDir()})
	ag := newAgent(t, brokerURL, goldenTopic)

	frame := readGolden(t, "batch_rejects_v1.bin")
	id := batchID(t, frame)
	ag.send(frame)
	ack := ag.await(id)[id]
	if ack.Status != protocol.AckCommitted || ack.Table != feed.RejectsTable || ack.SnapshotID == 0 {
		t.Fatalf("ack = %+v, want committed to %s", ack, feed.RejectsTable)
	}
	ag.send(frame)
	if again := ag.await(id)[id]; again.Status != protocol.AckCommitted || again.SnapshotID != ack.SnapshotID {
		t.Errorf("re-sent reject batch ack = %+v, want the first snapshot %d", again, ack.SnapshotID)
	}

	n, perBatch, at := scanTable(t, h.cat, feed.RejectsTable)
	if n != 2 || perBatch[id] != 2 {
		t.Fatalf("rejects table has %d rows, per batch %v; want the 2 golden rejects once", n, perBatch)
	}
	for col, want := range map[string]string{
		feed.RejectFeed: "lab_results_csv", feed.RejectFeedVersion: "3", feed.ColFeed: "lab_results_csv",
		feed.ColFacility: "f000001", feed.ColTenant: "t0001", feed.ColSourceFile: "f000001_lab_results_000001.zip!labs.csv",
		feed.RejectSourceFile: "f000001_lab_results_000001.zip!labs.csv",
	} {
		if got := distinct(t, at, col); len(got) != 1 || !got[want] {
			t.Errorf("column %s has values %v, want only %q", col, got, want)
		}
	}
	tbl, err := h.cat.Iceberg().LoadTable(context.Background(), h.cat.TableIdent(feed.RejectsTable))
	if err != nil {
		t.Fatal(err)
	}
	spec := tbl.Spec()
	var parts []string
	for _, f := range spec.Fields() {
		src, _ := tbl.Schema().FindFieldByID(f.SourceID())
		parts = append(parts, f.Transform.String()+"("+src.Name+")")
	}
	if len(parts) != 1 || parts[0] != "day(_ingested_at)" {
		t.Errorf("partition spec %v, want day(_ingested_at)", parts)
	}
	var order []string
	for _, f := range tbl.SortOrder().Fields() {
		src, _ := tbl.Schema().FindFieldByID(f.SourceID())
		order = append(order, src.Name)
	}
	if !slices.Equal(order, []string{feed.ColFacility, feed.ColIngestedAt}) {
		t.Errorf("sort order %v, want _facility, _ingested_at", order)
	}

	// The query layer lists tables from the catalog, so the rejects table is there.
	ctx := context.Background()
	eng, err := engine.New(ctx, engine.Config{CacheDir: t.TempDir()}, h.cat.Iceberg(), h.cat.Namespace()[0], testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	rows, err := eng.Query(ctx, "SELECT source_row, source_column, reason FROM medlake_rejects WHERE _facility = 'f000001' ORDER BY source_row")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []int64
	for rows.Next() {
		var row int64
		var col, reason *string
		if err := rows.Scan(&row, &col, &reason); err != nil {
			t.Fatal(err)
		}
		if reason == nil || *reason == "" {
			t.Errorf("row %d has no reason", row)
		}
		got = append(got, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 4 || got[1] != 7 {
		t.Errorf("queried source rows %v, want [4 7]", got)
	}

	// A live status with a quarantine event reaches the metric central ops watch.
	st, err := protocol.EncodeStatus(protocol.Status{Agent: goldenTopic.Agent, Tenant: goldenTopic.Tenant,
		Facility: goldenTopic.Facility, State: protocol.StateOnline, Time: time.Now(), Quarantined: 1,
		Events: []protocol.Event{{Kind: protocol.EventQuarantine, File: "/srv/exports/x.zip", Reason: "wrong password", Time: time.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	if tok := ag.c.Publish(protocol.StatusTopic(goldenTopic.Tenant, goldenTopic.Facility, goldenTopic.Agent), 1, false, st); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	deadline := time.Now().Add(waitLimit)
	for counterSum(t, h.reg, "medlake_hub_agent_quarantined_files_total") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("agent_quarantined_files_total never reached 1")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRejectsTableFromStart: the rejects table exists as soon as a hub runs, so ops'
// queries on it answer with no rows instead of failing before the first reject.
func TestRejectsTableFromStart(t *testing.T) {
	h := startHub(t, embeddedBroker(t), catalog.Config{DataDir: t.TempDir()})
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := h.cat.Iceberg().LoadTable(ctx, h.cat.TableIdent(feed.RejectsTable)); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no %s table 30 s after the hub started: %v", feed.RejectsTable, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	eng, err := engine.New(ctx, engine.Config{CacheDir: t.TempDir()}, h.cat.Iceberg(), h.cat.Namespace()[0], testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	rows, err := eng.Query(ctx, "SELECT count(*) FROM medlake_rejects")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n int64
	if !rows.Next() || rows.Scan(&n) != nil || n != 0 {
		t.Fatalf("SELECT count(*) FROM medlake_rejects = %d, %v; want 0", n, rows.Err())
	}
}
