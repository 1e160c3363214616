package pgwire

import (
	"context"
	"database/sql/driver"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// cursor is a DECLAREd cursor: its result, started at DECLARE and read on
// by each FETCH as DuckDB computes it. Only forward fetching is offered (NO
// SCROLL).
type cursor struct {
	cols   []column
	stream *resultStream
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
// HOLD] FOR query: the query starts when the statement executes and FETCH
// reads its rows as they are computed. A cursor without HOLD closes when
// the transaction ends (COMMIT, ROLLBACK, or the end of the query message
// outside BEGIN); one WITH HOLD stays open, streaming, until CLOSE, ROLLBACK
// or the idle timeout.
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
		s, tag, err := c.openStream(ctx, fmt.Sprintf("cursor %q", name), inner, nil)
		if err != nil {
			return nil, err
		}
		if tag != "" {
			return nil, errorf("42P11", "cannot open %s query as cursor", tag)
		}
		c.cursors[name] = &cursor{cols: inner.cols, stream: s, binary: binary, hold: strings.EqualFold(m[3], "WITH")}
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
	p.fetch = func(ctx context.Context, send func([]driver.Value) error) (string, error) {
		if c.cursors[name] != cur {
			return "", errorf("34000", "cursor %q does not exist", name)
		}
		n := 0
		if count != 0 {
			if verb == "MOVE" {
				send = func([]driver.Value) error { return nil }
			}
			if _, err := cur.stream.fetch(ctx, c, int64(max(count, 0)), func(row []driver.Value) error {
				n++
				return send(row)
			}); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("%s %d", verb, n), nil
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
			c.closeCursors(func(*cursor) bool { return true })
		} else {
			name := cursorName(m[1])
			cur := c.cursors[name]
			if cur == nil {
				return nil, errorf("34000", "cursor %q does not exist", name)
			}
			cur.stream.close(nil)
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
		c.endOfTransaction(tag == "ROLLBACK")
		return &virtualResult{tag: tag}, nil
	}}
}
