package pgwire

import (
	"context"
	"database/sql/driver"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// cursor is a DECLAREd cursor: its result, computed at DECLARE, and how far
// FETCH has read. Only forward fetching is offered (NO SCROLL).
type cursor struct {
	cols   []column
	rows   [][]driver.Value
	pos    int
	binary bool
	hold   bool // WITH HOLD: survives COMMIT
}

var (
	declareRe = regexp.MustCompile(`(?is)^DECLARE\s+("(?:[^"]|"")+"|[\w$]+)\s+((?:\w+\s+)*?)CURSOR\s+(?:(WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(.+)$`)
	fetchRe   = regexp.MustCompile(`(?is)^(FETCH|MOVE)\s+(?:(NEXT|ALL|FORWARD\s+ALL|FORWARD\s+\d+|FORWARD|\d+)\s+)?(?:(?:FROM|IN)\s+)?("(?:[^"]|"")+"|[\w$]+)$`)
	closeRe   = regexp.MustCompile(`(?is)^CLOSE\s+("(?:[^"]|"")+"|[\w$]+)$`)
)

func cursorName(s string) string {
	if strings.HasPrefix(s, `"`) {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return strings.ToLower(s)
}

// declareCursor runs DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH|WITHOUT
// HOLD] FOR query: the query runs when the statement executes and its rows
// wait in the cursor.
func (c *conn) declareCursor(ctx context.Context, q string) (*prepared, error) {
	m := declareRe.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return nil, errorf("42601", "syntax error in DECLARE (expected DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH HOLD] FOR query)")
	}
	name, opts := cursorName(m[1]), strings.ToUpper(strings.Join(strings.Fields(m[2]), " "))
	binary := false
	for _, o := range strings.Fields(opts) {
		switch o {
		case "BINARY":
			binary = true
		case "NO", "INSENSITIVE", "ASENSITIVE":
		case "SCROLL":
			if !strings.Contains(opts, "NO SCROLL") {
				return nil, errorf("0A000", "scrollable cursors are not supported; declare it NO SCROLL")
			}
		default:
			return nil, errorf("42601", "unknown cursor option %s", o)
		}
	}
	inner, err := c.prepare(ctx, m[4])
	if err != nil {
		return nil, err
	}
	return &prepared{run: func(ctx context.Context) (*virtualResult, error) {
		defer inner.close()
		if _, exists := c.cursors[name]; exists {
			return nil, errorf("42P03", "cursor %q already exists", name)
		}
		rows, _, err := c.collect(ctx, inner, nil)
		if err != nil {
			return nil, err
		}
		c.cursors[name] = &cursor{cols: inner.cols, rows: rows, binary: binary, hold: strings.EqualFold(m[3], "WITH")}
		return &virtualResult{tag: "DECLARE CURSOR"}, nil
	}}, nil
}

// fetchCursor answers FETCH/MOVE [NEXT|ALL|FORWARD [n|ALL]|n] [FROM|IN] name.
func (c *conn) fetchCursor(q string) (*prepared, error) {
	m := fetchRe.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return nil, errorf("0A000", "only forward FETCH and MOVE are supported: FETCH [NEXT | ALL | FORWARD [n | ALL] | n] [FROM] name")
	}
	verb, name := strings.ToUpper(m[1]), cursorName(m[3])
	cur := c.cursors[name]
	if cur == nil {
		return nil, errorf("34000", "cursor %q does not exist", name)
	}
	count := 1
	switch dir := strings.ToUpper(strings.Join(strings.Fields(m[2]), " ")); {
	case dir == "ALL" || dir == "FORWARD ALL":
		count = -1
	case strings.HasPrefix(dir, "FORWARD "):
		count, _ = strconv.Atoi(strings.TrimPrefix(dir, "FORWARD "))
	case dir != "" && dir != "NEXT" && dir != "FORWARD":
		count, _ = strconv.Atoi(dir)
	}
	p := &prepared{binary: cur.binary}
	if verb == "FETCH" {
		p.cols = cur.cols
	}
	p.run = func(context.Context) (*virtualResult, error) {
		if c.cursors[name] != cur {
			return nil, errorf("34000", "cursor %q does not exist", name)
		}
		end := len(cur.rows)
		if count >= 0 && cur.pos+count < end {
			end = cur.pos + count
		}
		rows := cur.rows[cur.pos:end]
		cur.pos = end
		v := &virtualResult{tag: fmt.Sprintf("%s %d", verb, len(rows))}
		if verb == "FETCH" {
			v.rows = rows
		}
		return v, nil
	}
	return p, nil
}

// closeCursor answers CLOSE name | CLOSE ALL.
func (c *conn) closeCursor(q string) (*prepared, error) {
	m := closeRe.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return nil, errorf("42601", "syntax error in CLOSE")
	}
	return &prepared{run: func(context.Context) (*virtualResult, error) {
		if strings.EqualFold(m[1], "ALL") {
			clear(c.cursors)
		} else {
			name := cursorName(m[1])
			if c.cursors[name] == nil {
				return nil, errorf("34000", "cursor %q does not exist", name)
			}
			delete(c.cursors, name)
		}
		return &virtualResult{tag: "CLOSE CURSOR"}, nil
	}}, nil
}

// endTransaction answers COMMIT or ROLLBACK: the transaction's portals and
// cursors (those without HOLD) close.
func (c *conn) endTransaction(tag string) *prepared {
	return &prepared{run: func(context.Context) (*virtualResult, error) {
		c.inTx = false
		clear(c.portals)
		for name, cur := range c.cursors {
			if !cur.hold || tag == "ROLLBACK" {
				delete(c.cursors, name)
			}
		}
		return &virtualResult{tag: tag}, nil
	}}
}
