package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"
	"testing"
	"time"
)

// failAt is a query whose row failAt fails: a materialized result fails
// before its first row is read, a streaming one hands out rows first.
const failAt = `SELECT CASE WHEN i < 900000 THEN i ELSE error('row 900000') END AS i FROM range(1000000) t(i)`

// failedAt reports whether err is failAt's error, as DuckDB reports it:
// itself, or, when a worker thread raised it, the interruption of the others.
func failedAt(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "row 900000") || err.Error() == errFailedMidStream.Msg)
}

// TestResultsStream checks that DuckDB computes results as they are read
// (the switch in stream.go), through Query and through a Cursor.
func TestResultsStream(t *testing.T) {
	ctx := context.Background()
	e := limitedEngine(t, Config{})
	sess, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	st, err := sess.Prepare(ctx, failAt)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	err = st.Query(ctx, nil, func([]driver.Value) error { n++; return nil })
	if !failedAt(err) {
		t.Fatalf("Query: err = %v, want the query's error", err)
	}
	if n == 0 {
		t.Error("Query: no row came before the error: the result was materialized, not streamed")
	}

	cur, err := st.OpenCursor(ctx, nil)
	if err != nil {
		t.Fatalf("OpenCursor: %v (a materialized result fails here)", err)
	}
	defer cur.Close()
	more, err := cur.Fetch(ctx, 10, func([]driver.Value) error { return nil })
	if err != nil || !more {
		t.Fatalf("first Fetch: more %v, err %v", more, err)
	}
	// The session's connection is free while the cursor is open.
	if err := runOne(ctx, t, e, "SELECT 42"); err != nil {
		t.Fatal(err)
	}
	_, err = cur.Fetch(ctx, 0, func([]driver.Value) error { return nil })
	if !failedAt(err) {
		t.Errorf("Fetch to the end: err = %v, want the query's error", err)
	}
	if _, err := cur.Fetch(ctx, 1, func([]driver.Value) error { return nil }); !errors.Is(err, ErrCursorClosed) {
		t.Errorf("Fetch after the error: %v, want ErrCursorClosed", err)
	}
}

// TestCursorReadsOnAsOthersRun interleaves two cursors and plain statements
// of one session and checks each cursor's rows come in order, complete.
func TestCursorReadsOnAsOthersRun(t *testing.T) {
	ctx := context.Background()
	e := limitedEngine(t, Config{MaxConcurrent: 1})
	sess, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	open := func(q string) *Cursor {
		st, err := sess.Prepare(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close() // the cursor does not need its statement
		c, err := st.OpenCursor(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := open(`SELECT i FROM range(100000) t(i)`), open(`SELECT -i FROM range(100000) t(i)`)
	var nextA, nextB int64
	for more := true; more; {
		var err error
		more, err = a.Fetch(ctx, 3000, func(row []driver.Value) error {
			if row[0].(int64) != nextA {
				t.Fatalf("cursor a: row %d, want %d", row[0], nextA)
			}
			nextA++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Fetch(ctx, 1000, func(row []driver.Value) error {
			if row[0].(int64) != -nextB {
				t.Fatalf("cursor b: row %d, want %d", row[0], -nextB)
			}
			nextB++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// The only statement slot is free between fetches.
		if err := runOne(ctx, t, e, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	if nextA != 100000 || nextB < 33000 {
		t.Errorf("read %d rows of a, %d of b", nextA, nextB)
	}
}

// TestCursorInterrupted cancels a cursor stuck inside one DuckDB fetch (a
// filter that matches nothing more over a huge range), while it opens and
// while it fetches, and checks it stops.
func TestCursorInterrupted(t *testing.T) {
	ctx := context.Background()
	e := limitedEngine(t, Config{})
	sess, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, tc := range []struct {
		name, query string
		fetch       bool // stuck in Fetch rather than in OpenCursor
	}{
		{"open", `SELECT i FROM range(1000000000000) t(i) WHERE hash(i) = 42`, false},
		{"fetch", `SELECT i FROM range(1000000000000) t(i) WHERE i < 200000 OR hash(i) = 42`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := sess.Prepare(ctx, tc.query)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			start := time.Now()
			wait := 500 * time.Millisecond
			if tc.fetch {
				wait = 20 * time.Second // the first rows come at once
			}
			octx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			c, err := st.OpenCursor(octx, nil)
			if !tc.fetch {
				if err == nil {
					c.Close()
					t.Fatal("OpenCursor returned while its first rows cannot exist")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				defer cancel()
				start = time.Now()
				n := 0
				_, err = c.Fetch(fctx, 300000, func([]driver.Value) error { n++; return nil })
				if n == 0 || n >= 300000 {
					t.Errorf("fetched %d rows before the stall, want some of the 200000", n)
				}
			}
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), "interrupt") && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want an interrupt", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %s to stop", d)
			}
		})
	}
}
