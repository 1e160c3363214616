package pgwire

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/medlake/medlake/query/engine"
)

// tokKind is a lexical class of PostgreSQL SQL, as far as rewriteSQL needs.
type tokKind int

const (
	tSpace  tokKind = iota // whitespace and comments
	tIdent                 // unquoted identifier or keyword
	tQIdent                // "quoted identifier"
	tString                // '...', E'...', $tag$...$tag$
	tNumber
	tParam // $n
	tOp    // operator characters: + - * / < > = ~ ! @ # % ^ & | ` ? and ::
	tPunct // ( ) [ ] , ; . and anything else
)

type token struct {
	kind tokKind
	text string
}

const opChars = "+-*/<>=~!@#%^&|`?"

// lex splits sql into tokens whose texts concatenate to sql exactly.
// Unterminated quotes and comments run to the end.
func lex(sql string) []token {
	var toks []token
	i, n := 0, len(sql)
	for i < n {
		c := sql[i]
		start := i
		kind := tPunct
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			for i < n && strings.IndexByte(" \t\n\r\f\v", sql[i]) >= 0 {
				i++
			}
			kind = tSpace
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' {
				i++
			}
			kind = tSpace
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
			kind = tSpace
		case (c == 'e' || c == 'E') && i+1 < n && sql[i+1] == '\'':
			i = engine.SkipQuoted(sql, i+1, '\'', true)
			kind = tString
		case c == '\'':
			i = engine.SkipQuoted(sql, i, '\'', false)
			kind = tString
		case c == '"':
			i = engine.SkipQuoted(sql, i, '"', false)
			kind = tQIdent
		case c == '$':
			j := i + 1
			for j < n && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			if j > i+1 {
				i, kind = j, tParam
				break
			}
			j = i + 1
			for j < n && isIdentStart(sql[j]) || (j > i+1 && j < n && sql[j] >= '0' && sql[j] <= '9') {
				j++
			}
			if j < n && sql[j] == '$' {
				tag := sql[i : j+1]
				if end := strings.Index(sql[j+1:], tag); end >= 0 {
					i = j + 1 + end + len(tag)
				} else {
					i = n
				}
				kind = tString
				break
			}
			i++
		case c == ':' && i+1 < n && sql[i+1] == ':':
			i += 2
			kind = tOp
		case strings.IndexByte(opChars, c) >= 0:
			for i < n && strings.IndexByte(opChars, sql[i]) >= 0 {
				i++
			}
			kind = tOp
		case c >= '0' && c <= '9':
			for i < n && (sql[i] >= '0' && sql[i] <= '9' || sql[i] == '.' || sql[i] == 'e' || sql[i] == 'E') {
				i++
			}
			kind = tNumber
		case isIdentStart(c):
			for i < n && (isIdentStart(sql[i]) || sql[i] >= '0' && sql[i] <= '9' || sql[i] == '$') {
				i++
			}
			kind = tIdent
		default:
			i++
		}
		toks = append(toks, token{kind, sql[start:i]})
	}
	return toks
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// identName is the name an identifier token stands for: lower-cased when
// unquoted, as PostgreSQL folds it; "" for other tokens.
func identName(t token) string {
	switch t.kind {
	case tIdent:
		return strings.ToLower(t.text)
	case tQIdent:
		if len(t.text) >= 2 && t.text[len(t.text)-1] == '"' {
			return strings.ReplaceAll(t.text[1:len(t.text)-1], `""`, `"`)
		}
	}
	return ""
}

// stringValue is the value of a plain '...' literal.
func stringValue(t token) (string, bool) {
	if t.kind != tString || len(t.text) < 2 || t.text[0] != '\'' || t.text[len(t.text)-1] != '\'' {
		return "", false
	}
	return strings.ReplaceAll(t.text[1:len(t.text)-1], "''", "'"), true
}

// castTypes are PostgreSQL types clients cast catalog values to, with the
// DuckDB type that stands in for them.
var castTypes = map[string]string{
	"oid": "BIGINT", "regnamespace": "BIGINT", "regrole": "BIGINT", "xid": "BIGINT", "regoper": "BIGINT",
	"name": "VARCHAR", "text": "VARCHAR", "char": "VARCHAR", "bpchar": "VARCHAR", "regproc": "VARCHAR",
	"regprocedure": "VARCHAR", "int2vector": "VARCHAR", "oidvector": "VARCHAR", "character": "VARCHAR",
	"int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "float4": "REAL", "float8": "DOUBLE",
	"bool": "BOOLEAN", "varchar": "VARCHAR", "numeric": "DECIMAL",
}

// rewriteSQL adapts PostgreSQL SQL that clients send when they browse the
// catalog to DuckDB and the emulation in medlake_pg:
//
//   - pg_catalog.X and unqualified X for the emulated relations and
//     functions become medlake_pg.X; pg_catalog.X for anything else becomes
//     X (DuckDB's own functions are not in a pg_catalog schema);
//   - public.X becomes main.X (the lake tables' schema in DuckDB), and
//     information_schema.tables, columns and schemata their emulation;
//   - OPERATOR(pg_catalog.op) becomes op; COLLATE pg_catalog.default and
//     COLLATE "C" are dropped;
//   - 'name'::regclass and 'name'::regtype look the name up; other casts to
//     catalog types (oid, name, regproc…) become their DuckDB stand-ins;
//   - x ~ 'pattern' keeps PostgreSQL's meaning (a match anywhere) although
//     DuckDB's ~ must match the whole string;
//   - current_user and session_user become the login's name,
//     pg_backend_pid() the connection's process id, and
//     current_setting('name') carries the session's value of the setting.
//
// Result columns named after a rewritten call are renamed by pgColumnName.
//
// Everything else, including string literals and quoted identifiers, is
// left as it is.
func rewriteSQL(sql string, sess session, setting func(string) (string, bool)) string {
	user := sess.user
	toks := lex(sql)
	// next returns the index of the first non-space token at or after i.
	next := func(i int) int {
		for i < len(toks) && toks[i].kind == tSpace {
			i++
		}
		return i
	}
	prev := func(i int) int {
		for i--; i >= 0 && toks[i].kind == tSpace; i-- {
		}
		return i
	}
	is := func(i int, text string) bool {
		return i >= 0 && i < len(toks) && toks[i].kind != tString && toks[i].kind != tQIdent && strings.EqualFold(toks[i].text, text)
	}
	nameFunctionAliases(toks, next)
	var out strings.Builder
	out.Grow(len(sql) + 64)
	emit := func(s string) { out.WriteString(s) }
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == tIdent && strings.EqualFold(t.text, "OPERATOR") && is(next(i+1), "("):
			// OPERATOR(pg_catalog.~) -> ~
			j := next(next(i+1) + 1)
			if is(j, "pg_catalog") && is(next(j+1), ".") {
				j = next(next(j+1) + 1)
			}
			if j < len(toks) && toks[j].kind == tOp && is(next(j+1), ")") {
				emit(toks[j].text)
				i = next(j + 1)
				// The operand after an operator keeps its rewrite.
				i = rewritePattern(toks, next(i+1), i, &out)
				continue
			}
			emit(t.text)
		case t.kind == tIdent && strings.EqualFold(t.text, "COLLATE"):
			j := next(i + 1)
			if is(j, "pg_catalog") && is(next(j+1), ".") {
				j = next(next(j+1) + 1)
			}
			if name := identName(toks[min(j, len(toks)-1)]); j < len(toks) && (name == "default" || name == "C" || name == "POSIX") {
				i = j
				continue
			}
			emit(t.text)
		case t.kind == tOp && t.text == "::":
			j := next(i + 1)
			if is(j, "pg_catalog") && is(next(j+1), ".") {
				j = next(next(j+1) + 1)
			}
			name := identName(toks[min(j, len(toks)-1)])
			if j >= len(toks) || name == "" {
				emit(t.text)
				continue
			}
			switch name {
			case "regclass", "regtype":
				// 'name'::regclass: look the name up; x::regclass: the oid.
				// A literal or parameter is a name: 'lab_results'::regclass
				// and $1::regclass look it up.
				if p := prev(i); p >= 0 && (toks[p].kind == tString || toks[p].kind == tParam) {
					lit := toks[p].text
					// Drop the operand (and spaces after it) already written.
					trimmed := strings.TrimRight(out.String(), " \t\r\n")
					if strings.HasSuffix(trimmed, lit) {
						if toks[p].kind == tParam {
							lit = "CAST(" + lit + " AS VARCHAR)"
						}
						out.Reset()
						out.WriteString(trimmed[:len(trimmed)-len(toks[p].text)])
						emit(catalogSchema + ".to_" + name + "(" + lit + ")")
						i = j
						continue
					}
				}
				emit("::BIGINT")
				i = j
			default:
				if d, ok := castTypes[name]; ok {
					emit("::" + d)
					i = j
					continue
				}
				emit(t.text)
			}
		case t.kind == tOp && (t.text == "~" || t.text == "!~" || t.text == "~*" || t.text == "!~*"):
			emit(t.text)
			i = rewritePattern(toks, next(i+1), i, &out)
		case t.kind == tIdent || t.kind == tQIdent:
			name := identName(t)
			p := prev(i)
			afterDot := is(p, ".")
			n := next(i + 1)
			beforeDot := is(n, ".")
			switch {
			case (name == "pg_catalog") && beforeDot && !afterDot:
				// pg_catalog.X: emulated X goes to medlake_pg, the rest unqualified.
				x := next(n + 1)
				if x < len(toks) {
					xname := identName(toks[x])
					if xname == "current_setting" {
						if repl, last, ok := currentSetting(toks, x, next, setting); ok {
							emit(repl)
							i = last
							continue
						}
					}
					if emulated(xname, is(next(x+1), "(")) {
						emit(catalogSchema + "." + toks[x].text)
					} else {
						emit(toks[x].text)
					}
					i = x
					continue
				}
				emit(t.text)
			case name == "information_schema" && beforeDot && !afterDot:
				// information_schema.X for the emulated views.
				x := next(n + 1)
				if x < len(toks) && infoSchemaViews[identName(toks[x])] && !is(next(x+1), "(") {
					emit(catalogSchema + ".information_schema_" + identName(toks[x]))
					i = x
					continue
				}
				if x < len(toks) && identName(toks[x]) == "_pg_expandarray" && is(next(x+1), "(") {
					emit(catalogSchema + "._pg_expandarray")
					i = x
					continue
				}
				emit(t.text)
			case name == "public" && beforeDot && !afterDot:
				emit("main")
			case !afterDot && !beforeDot && t.kind == tIdent && (name == "current_user" || name == "session_user") && !is(n, "("):
				emit(catalogSchema + `."current_user"(` + quoteLiteral(user) + ")")
			case !afterDot && !beforeDot && t.kind == tIdent && name == "pg_backend_pid" && is(n, "(") && is(next(n+1), ")"):
				emit(fmt.Sprintf("%s.pg_backend_pid(%d)", catalogSchema, sess.pid))
				i = next(n + 1)
			case !afterDot && !beforeDot && t.kind == tIdent && name == "current_setting" && is(n, "("):
				if repl, last, ok := currentSetting(toks, i, next, setting); ok {
					emit(repl)
					i = last
					continue
				}
				emit(catalogSchema + "." + t.text)
			case !afterDot && !beforeDot && t.kind == tIdent && emulated(name, is(n, "(")) && !is(p, "AS"):
				emit(catalogSchema + "." + t.text)
			default:
				emit(t.text)
			}
		default:
			emit(t.text)
		}
	}
	return out.String()
}

// infoSchemaViews are the information_schema views emulated in medlake_pg.
var infoSchemaViews = setOf("tables", "columns", "schemata")

func emulated(name string, call bool) bool {
	if call {
		return catalogFunctions[name]
	}
	return catalogRelations[name]
}

// rewritePattern writes the tokens from from (the index after the
// operator) up to and including the pattern literal at j, turning a
// PostgreSQL regular expression match (anywhere in the string) into the
// whole-string match DuckDB's ~ performs. It returns the index of the last
// token consumed. A pattern that is not a plain literal is left alone.
func rewritePattern(toks []token, j, from int, out *strings.Builder) int {
	if j >= len(toks) {
		return from
	}
	v, ok := stringValue(toks[j])
	if !ok {
		return from
	}
	for k := from + 1; k < j; k++ {
		out.WriteString(toks[k].text)
	}
	out.WriteString(quoteLiteral("(?s).*(?:" + v + ").*"))
	return j
}

// session is what rewriteSQL fills in about the connection.
type session struct {
	user string
	pid  uint32
}

// clauseWords end a FROM item; they are not aliases.
var clauseWords = setOf("where", "on", "join", "left", "right", "inner", "cross", "full", "natural", "group",
	"order", "limit", "offset", "union", "intersect", "except", "using", "having", "window", "with", "as", "lateral")

// nameFunctionAliases gives a set-returning function in FROM with a bare
// alias a column of that name, as PostgreSQL does: generate_series(1, 3) s
// makes s both the table and its column, while DuckDB names the column
// generate_series.
func nameFunctionAliases(toks []token, next func(int) int) {
	for i, t := range toks {
		if t.kind != tIdent || !strings.EqualFold(t.text, "generate_series") {
			continue
		}
		open := next(i + 1)
		if open >= len(toks) || toks[open].text != "(" {
			continue
		}
		depth, j := 0, open
		for ; j < len(toks); j++ {
			switch toks[j].text {
			case "(":
				depth++
			case ")":
				depth--
			}
			if depth == 0 {
				break
			}
		}
		a := next(j + 1)
		if a < len(toks) && strings.EqualFold(toks[a].text, "AS") {
			a = next(a + 1)
		}
		if a >= len(toks) || toks[a].kind != tIdent || clauseWords[strings.ToLower(toks[a].text)] {
			continue
		}
		if n := next(a + 1); n < len(toks) && toks[n].text == "(" {
			continue // already has a column list
		}
		toks[a].text = toks[a].text + "(" + toks[a].text + ")"
	}
}

// funcColumn matches a DuckDB column name that is a function call's text.
var funcColumn = regexp.MustCompile(`^(?:[A-Za-z_][A-Za-z0-9_]*\.)?"?([A-Za-z_][A-Za-z0-9_]*)"?\(.*\)$`)

// pgColumnName is the name PostgreSQL gives a result column where DuckDB
// uses the expression's text: a function call is named after the function
// (count(*) is "count", medlake_pg.current_database() "current_database").
func pgColumnName(name string) string {
	m := funcColumn.FindStringSubmatch(name)
	if m == nil || strings.Contains(name, ") ") {
		return name
	}
	if m[1] == "count_star" {
		return "count"
	}
	return m[1]
}

// currentSetting rewrites current_setting('name' [, missing_ok]) at toks[i]
// to pass the session's value of the setting, which the catalog macro
// returns. It reports false for other forms (a non-literal name).
func currentSetting(toks []token, i int, next func(int) int, setting func(string) (string, bool)) (string, int, bool) {
	open := next(i + 1)
	lit := next(open + 1)
	if lit >= len(toks) {
		return "", 0, false
	}
	name, ok := stringValue(toks[lit])
	if !ok {
		return "", 0, false
	}
	end := next(lit + 1)
	missingOK := "false"
	if end < len(toks) && toks[end].text == "," {
		b := next(end + 1)
		if b >= len(toks) || (!strings.EqualFold(toks[b].text, "true") && !strings.EqualFold(toks[b].text, "false")) {
			return "", 0, false
		}
		missingOK = strings.ToLower(toks[b].text)
		end = next(b + 1)
	}
	if end >= len(toks) || toks[end].text != ")" {
		return "", 0, false
	}
	value, known := setting(name)
	v := "CAST(NULL AS VARCHAR)"
	if known {
		v = quoteLiteral(value)
	} else if missingOK == "false" {
		// Unknown and not missing_ok: the macro's two-argument form
		// answers NULL; PostgreSQL would raise 42704.
		v = "CAST(NULL AS VARCHAR)"
	}
	return catalogSchema + ".current_setting(" + toks[lit].text + ", " + missingOK + ", " + v + ")", end, true
}
