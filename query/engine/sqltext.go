package engine

import (
	"strconv"
	"strings"
)

// token kinds produced by scan; only what splitting and parameter rewriting
// need is distinguished, everything else is "other".
type tokKind int

const (
	tokOther tokKind = iota
	tokSemicolon
	tokParam // $n
	tokSpace // whitespace or comment
)

// scan walks sql and calls fn for each token with its byte range. It knows
// PostgreSQL/DuckDB quoting: '...' (a doubled quote escapes), E'...' (backslash
// escapes),
// "..." identifiers, $tag$...$tag$ dollar quoting, -- and nested /* */
// comments. An unterminated quote or comment runs to the end of the input
// (DuckDB then reports the syntax error).
func scan(sql string, fn func(kind tokKind, start, end int)) {
	i := 0
	n := len(sql)
	for i < n {
		c := sql[i]
		start := i
		switch {
		case c == ';':
			i++
			fn(tokSemicolon, start, i)
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			for i < n && strings.IndexByte(" \t\n\r\f\v", sql[i]) >= 0 {
				i++
			}
			fn(tokSpace, start, i)
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' {
				i++
			}
			fn(tokSpace, start, i)
		case c == '/' && i+1 < n && sql[i+1] == '*':
			depth := 0
			for i < n {
				if sql[i] == '/' && i+1 < n && sql[i+1] == '*' {
					depth++
					i += 2
				} else if sql[i] == '*' && i+1 < n && sql[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
			fn(tokSpace, start, i)
		case (c == 'e' || c == 'E') && i+1 < n && sql[i+1] == '\'' && !identChar(sql, i-1):
			i = SkipQuoted(sql, i+1, '\'', true)
			fn(tokOther, start, i)
		case c == '\'' || c == '"':
			i = SkipQuoted(sql, i, c, false)
			fn(tokOther, start, i)
		case c == '$':
			j := i + 1
			for j < n && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			if j > i+1 && !identChar(sql, i-1) {
				i = j
				fn(tokParam, start, i)
				continue
			}
			// Dollar quote: $tag$ ... $tag$ where tag is empty or an identifier.
			j = i + 1
			for j < n && isIdentByte(sql[j]) && !(j == i+1 && sql[j] >= '0' && sql[j] <= '9') {
				j++
			}
			if j < n && sql[j] == '$' && !identChar(sql, i-1) {
				tag := sql[i : j+1]
				end := strings.Index(sql[j+1:], tag)
				if end < 0 {
					i = n
				} else {
					i = j + 1 + end + len(tag)
				}
				fn(tokOther, start, i)
				continue
			}
			i++
			fn(tokOther, start, i)
		default:
			for i < n && isIdentByte(sql[i]) {
				i++
			}
			if i == start {
				i++
			}
			fn(tokOther, start, i)
		}
	}
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

func identChar(sql string, i int) bool {
	return i >= 0 && i < len(sql) && (isIdentByte(sql[i]) || sql[i] == '$')
}

// SkipQuoted returns the index after the closing quote that matches sql[i]
// (a doubled quote stays inside; with backslash, \ escapes the next byte).
// pgwire's rewrite lexes client SQL with it too.
func SkipQuoted(sql string, i int, q byte, backslash bool) int {
	i++
	for i < len(sql) {
		switch {
		case backslash && sql[i] == '\\':
			i += 2
		case sql[i] == q && i+1 < len(sql) && sql[i+1] == q:
			i += 2
		case sql[i] == q:
			return i + 1
		default:
			i++
		}
	}
	return len(sql)
}

// SplitStatements splits a simple-query string into its statements, without
// the separating semicolons. Statements holding only whitespace and comments
// are returned as "" so the caller can answer them with EmptyQueryResponse,
// as PostgreSQL does for an empty query string; empty pieces between
// semicolons of a non-empty string are dropped, again as PostgreSQL does.
func SplitStatements(sql string) []string {
	var out []string
	start := 0
	empty := true
	scan(sql, func(kind tokKind, s, e int) {
		switch kind {
		case tokSemicolon:
			if !empty {
				out = append(out, strings.TrimSpace(sql[start:s]))
			}
			start, empty = e, true
		case tokSpace:
		default:
			empty = false
		}
	})
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
	last := 0
	scan(sql, func(kind tokKind, s, e int) {
		if kind != tokParam {
			return
		}
		idx, err := strconv.Atoi(sql[s+1 : e])
		if err != nil || !cast[idx] {
			return
		}
		b.WriteString(sql[last:s])
		b.WriteString("CAST(")
		b.WriteString(sql[s:e])
		b.WriteString(" AS VARCHAR)")
		last = e
	})
	b.WriteString(sql[last:])
	return b.String()
}

// FirstKeyword returns the upper-cased first word of a statement, skipping
// comments, for routing session commands (SET, SHOW, BEGIN...).
func FirstKeyword(sql string) string {
	word := ""
	done := false
	scan(sql, func(kind tokKind, s, e int) {
		if done || kind == tokSpace {
			return
		}
		done = true
		if kind == tokOther && isIdentByte(sql[s]) {
			word = strings.ToUpper(sql[s:e])
		}
	})
	return word
}
