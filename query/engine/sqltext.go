package engine

import (
	"strconv"
	"strings"

	"github.com/medlake/medlake/query/sqllex"
)

// SplitStatements splits a simple-query string into its statements, without
// the separating semicolons. Statements holding only whitespace and comments
// are returned as "" so the caller can answer them with EmptyQueryResponse,
// as PostgreSQL does for an empty query string; empty pieces between
// semicolons of a non-empty string are dropped, again as PostgreSQL does.
func SplitStatements(sql string) []string {
	var out []string
	start, pos := 0, 0
	empty := true
	for _, t := range sqllex.Lex(sql) {
		pos += len(t.Text)
		switch {
		case t.Kind == sqllex.Punct && t.Text == ";":
			if !empty {
				out = append(out, strings.TrimSpace(sql[start:pos-1]))
			}
			start, empty = pos, true
		case t.Kind != sqllex.Space:
			empty = false
		}
	}
	if !empty {
		out = append(out, strings.TrimSpace(sql[start:]))
	}
	if len(out) == 0 {
		return []string{""}
	}
	return out
}

// castParams rewrites each $n whose index is in cast to CAST($n AS VARCHAR),
// so DuckDB can type a statement whose parameters it cannot infer (PostgreSQL
// types such parameters as text, too).
func castParams(sql string, cast map[int]bool) string {
	var b strings.Builder
	for _, t := range sqllex.Lex(sql) {
		if t.Kind == sqllex.Param {
			if idx, err := strconv.Atoi(t.Text[1:]); err == nil && cast[idx] {
				b.WriteString("CAST(" + t.Text + " AS VARCHAR)")
				continue
			}
		}
		b.WriteString(t.Text)
	}
	return b.String()
}

// FirstKeyword returns the upper-cased first word of a statement, skipping
// comments, for routing session commands (SET, SHOW, BEGIN...).
func FirstKeyword(sql string) string {
	for _, t := range sqllex.Lex(sql) {
		switch t.Kind {
		case sqllex.Space:
		case sqllex.Ident:
			return strings.ToUpper(t.Text)
		default:
			return ""
		}
	}
	return ""
}
