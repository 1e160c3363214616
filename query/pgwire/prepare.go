package pgwire

import (
	"context"
	"regexp"
	"strings"

	"github.com/medlake/medlake/query/sqllex"
)

// SQL-level PREPARE, EXECUTE and DEALLOCATE. They share their names with
// the protocol's prepared statements, as in PostgreSQL, so a statement
// prepared with Parse can be run with EXECUTE and the other way round.

var (
	prepareRe    = regexp.MustCompile(`(?is)^PREPARE\s+("(?:[^"]|"")+"|[\w$]+)\s*(?:\(([^)]*)\))?\s*AS\s+(.+)$`)
	executeRe    = regexp.MustCompile(`(?is)^EXECUTE\s+("(?:[^"]|"")+"|[\w$]+)\s*(?:\((.*)\))?\s*$`)
	deallocateRe = regexp.MustCompile(`(?is)^DEALLOCATE\s+(?:PREPARE\s+)?("(?:[^"]|"")+"|[\w$]+)$`)
)

// prepareSQL answers PREPARE name [(type, …)] AS statement. Parameter types
// come from the statement, as for Parse without types.
func (c *conn) prepareSQL(ctx context.Context, q string) (*prepared, error) {
	m := prepareRe.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return nil, errorf("42601", "syntax error in PREPARE (expected PREPARE name [(types)] AS statement)")
	}
	name := cursorName(m[1])
	if _, exists := c.stmts[name]; exists {
		return nil, errorf("42P05", "prepared statement %q already exists", name)
	}
	p, err := c.prepare(ctx, m[3])
	if err != nil {
		return nil, err
	}
	c.stmts[name] = p
	return &prepared{virtual: &virtualResult{tag: "PREPARE"}}, nil
}

// executeSQL answers EXECUTE name [(value, …)]. Values are literals: quoted
// strings, numbers, true/false or NULL, each read as the parameter's type.
func (c *conn) executeSQL(q string) (*prepared, error) {
	m := executeRe.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return nil, errorf("42601", "syntax error in EXECUTE (expected EXECUTE name [(values)])")
	}
	name := cursorName(m[1])
	p := c.stmts[name]
	if p == nil {
		return nil, errorf("26000", "prepared statement %q does not exist", name)
	}
	texts, err := splitLiterals(m[2])
	if err != nil {
		return nil, err
	}
	if len(texts) != len(p.paramOIDs) {
		return nil, errorf("42601", "wrong number of parameters for prepared statement %q: expected %d, got %d", name, len(p.paramOIDs), len(texts))
	}
	args := make([]any, len(texts))
	for i, t := range texts {
		if t == nil {
			continue
		}
		if args[i], err = decodeTextParam(p.paramOIDs[i], *t); err != nil {
			return nil, errorf("22P02", "parameter $%d: %v", i+1, err)
		}
	}
	if args == nil {
		args = []any{}
	}
	if p.st == nil {
		return p, nil // a session command: nothing to bind
	}
	return &prepared{st: p.st, cols: p.cols, args: args, borrowed: true}, nil
}

// splitLiterals reads a comma-separated list of literals; nil stands for
// NULL.
func splitLiterals(s string) ([]*string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []*string
	var cur []sqllex.Token
	flush := func() error {
		var vals []sqllex.Token
		for _, t := range cur {
			if t.Kind != sqllex.Space {
				vals = append(vals, t)
			}
		}
		cur = nil
		// 'x', -1, 2.5, NULL, true, 'x'::type
		if len(vals) >= 3 && vals[len(vals)-2].Text == "::" {
			vals = vals[:len(vals)-2]
		}
		switch {
		case len(vals) == 1 && vals[0].Kind == sqllex.String:
			v, ok := vals[0].StringValue()
			if !ok {
				return errorf("0A000", "EXECUTE takes plain '…' string literals")
			}
			out = append(out, &v)
		case len(vals) == 1 && strings.EqualFold(vals[0].Text, "NULL"):
			out = append(out, nil)
		case len(vals) == 1 && (vals[0].Kind == sqllex.Number || vals[0].Kind == sqllex.Ident):
			v := vals[0].Text
			out = append(out, &v)
		case len(vals) == 2 && vals[0].Text == "-" && vals[1].Kind == sqllex.Number:
			v := "-" + vals[1].Text
			out = append(out, &v)
		default:
			return errorf("0A000", "EXECUTE parameters must be literals")
		}
		return nil
	}
	for _, t := range sqllex.Lex(s) {
		if t.Kind == sqllex.Punct && t.Text == "," {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		cur = append(cur, t)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// deallocate answers DEALLOCATE [PREPARE] name | ALL.
func (c *conn) deallocate(q string) (*prepared, error) {
	m := deallocateRe.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return nil, errorf("42601", "syntax error in DEALLOCATE")
	}
	return &prepared{run: func(context.Context) (*virtualResult, error) {
		if strings.EqualFold(m[1], "ALL") {
			for name, p := range c.stmts {
				p.close()
				delete(c.stmts, name)
			}
		} else {
			name := cursorName(m[1])
			p := c.stmts[name]
			if p == nil {
				return nil, errorf("26000", "prepared statement %q does not exist", name)
			}
			p.close()
			delete(c.stmts, name)
		}
		return &virtualResult{tag: "DEALLOCATE"}, nil
	}}, nil
}
