package pgwire

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/medlake/medlake/query/sqllex"
)

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
	toks := sqllex.Lex(sql)
	// next returns the index of the first non-space token at or after i.
	next := func(i int) int {
		for i < len(toks) && toks[i].Kind == sqllex.Space {
			i++
		}
		return i
	}
	prev := func(i int) int {
		for i--; i >= 0 && toks[i].Kind == sqllex.Space; i-- {
		}
		return i
	}
	is := func(i int, text string) bool {
		return i >= 0 && i < len(toks) && toks[i].Kind != sqllex.String && toks[i].Kind != sqllex.QIdent && strings.EqualFold(toks[i].Text, text)
	}
	nameFunctionAliases(toks, next)
	var out strings.Builder
	out.Grow(len(sql) + 64)
	emit := func(s string) { out.WriteString(s) }
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.Kind == sqllex.Ident && strings.EqualFold(t.Text, "OPERATOR") && is(next(i+1), "("):
			// OPERATOR(pg_catalog.~) -> ~
			j := next(next(i+1) + 1)
			if is(j, "pg_catalog") && is(next(j+1), ".") {
				j = next(next(j+1) + 1)
			}
			if j < len(toks) && toks[j].Kind == sqllex.Op && is(next(j+1), ")") {
				emit(toks[j].Text)
				i = next(j + 1)
				// The operand after an operator keeps its rewrite.
				i = rewritePattern(toks, next(i+1), i, &out)
				continue
			}
			emit(t.Text)
		case t.Kind == sqllex.Ident && strings.EqualFold(t.Text, "COLLATE"):
			j := next(i + 1)
			if is(j, "pg_catalog") && is(next(j+1), ".") {
				j = next(next(j+1) + 1)
			}
			if name := toks[min(j, len(toks)-1)].Name(); j < len(toks) && (name == "default" || name == "C" || name == "POSIX") {
				i = j
				continue
			}
			emit(t.Text)
		case t.Kind == sqllex.Op && t.Text == "::":
			j := next(i + 1)
			if is(j, "pg_catalog") && is(next(j+1), ".") {
				j = next(next(j+1) + 1)
			}
			name := toks[min(j, len(toks)-1)].Name()
			if j >= len(toks) || name == "" {
				emit(t.Text)
				continue
			}
			switch name {
			case "regclass", "regtype":
				// 'name'::regclass: look the name up; x::regclass: the oid.
				// A literal or parameter is a name: 'lab_results'::regclass
				// and $1::regclass look it up.
				if p := prev(i); p >= 0 && (toks[p].Kind == sqllex.String || toks[p].Kind == sqllex.Param) {
					lit := toks[p].Text
					// Drop the operand (and spaces after it) already written.
					trimmed := strings.TrimRight(out.String(), " \t\r\n")
					if strings.HasSuffix(trimmed, lit) {
						if toks[p].Kind == sqllex.Param {
							lit = "CAST(" + lit + " AS VARCHAR)"
						}
						out.Reset()
						out.WriteString(trimmed[:len(trimmed)-len(toks[p].Text)])
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
				emit(t.Text)
			}
		case t.Kind == sqllex.Op && (t.Text == "~" || t.Text == "!~" || t.Text == "~*" || t.Text == "!~*"):
			emit(t.Text)
			i = rewritePattern(toks, next(i+1), i, &out)
		case t.Kind == sqllex.Ident || t.Kind == sqllex.QIdent:
			name := t.Name()
			p := prev(i)
			afterDot := is(p, ".")
			n := next(i + 1)
			beforeDot := is(n, ".")
			switch {
			case (name == "pg_catalog") && beforeDot && !afterDot:
				// pg_catalog.X: emulated X goes to medlake_pg, the rest unqualified.
				x := next(n + 1)
				if x < len(toks) {
					xname := toks[x].Name()
					if xname == "current_setting" {
						if repl, last, ok := currentSetting(toks, x, next, setting); ok {
							emit(repl)
							i = last
							continue
						}
					}
					if emulated(xname, is(next(x+1), "(")) {
						emit(catalogSchema + "." + toks[x].Text)
					} else {
						emit(toks[x].Text)
					}
					i = x
					continue
				}
				emit(t.Text)
			case name == "information_schema" && beforeDot && !afterDot:
				// information_schema.X for the emulated views.
				x := next(n + 1)
				if x < len(toks) && infoSchemaViews[toks[x].Name()] && !is(next(x+1), "(") {
					emit(catalogSchema + ".information_schema_" + toks[x].Name())
					i = x
					continue
				}
				if x < len(toks) && toks[x].Name() == "_pg_expandarray" && is(next(x+1), "(") {
					emit(catalogSchema + "._pg_expandarray")
					i = x
					continue
				}
				emit(t.Text)
			case name == "public" && beforeDot && !afterDot:
				emit("main")
			case !afterDot && !beforeDot && t.Kind == sqllex.Ident && (name == "current_user" || name == "session_user") && !is(n, "("):
				emit(catalogSchema + `."current_user"(` + quoteLiteral(user) + ")")
			case !afterDot && !beforeDot && t.Kind == sqllex.Ident && name == "pg_backend_pid" && is(n, "(") && is(next(n+1), ")"):
				emit(fmt.Sprintf("%s.pg_backend_pid(%d)", catalogSchema, sess.pid))
				i = next(n + 1)
			case !afterDot && !beforeDot && t.Kind == sqllex.Ident && name == "current_setting" && is(n, "("):
				if repl, last, ok := currentSetting(toks, i, next, setting); ok {
					emit(repl)
					i = last
					continue
				}
				emit(catalogSchema + "." + t.Text)
			case !afterDot && !beforeDot && t.Kind == sqllex.Ident && emulated(name, is(n, "(")) && !is(p, "AS"):
				emit(catalogSchema + "." + t.Text)
			default:
				emit(t.Text)
			}
		default:
			emit(t.Text)
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
func rewritePattern(toks []sqllex.Token, j, from int, out *strings.Builder) int {
	if j >= len(toks) {
		return from
	}
	v, ok := toks[j].StringValue()
	if !ok {
		return from
	}
	for k := from + 1; k < j; k++ {
		out.WriteString(toks[k].Text)
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
func nameFunctionAliases(toks []sqllex.Token, next func(int) int) {
	for i, t := range toks {
		if t.Kind != sqllex.Ident || !strings.EqualFold(t.Text, "generate_series") {
			continue
		}
		open := next(i + 1)
		if open >= len(toks) || toks[open].Text != "(" {
			continue
		}
		depth, j := 0, open
		for ; j < len(toks); j++ {
			switch toks[j].Text {
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
		if a < len(toks) && strings.EqualFold(toks[a].Text, "AS") {
			a = next(a + 1)
		}
		if a >= len(toks) || toks[a].Kind != sqllex.Ident || clauseWords[strings.ToLower(toks[a].Text)] {
			continue
		}
		if n := next(a + 1); n < len(toks) && toks[n].Text == "(" {
			continue // already has a column list
		}
		toks[a].Text = toks[a].Text + "(" + toks[a].Text + ")"
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
func currentSetting(toks []sqllex.Token, i int, next func(int) int, setting func(string) (string, bool)) (string, int, bool) {
	open := next(i + 1)
	lit := next(open + 1)
	if lit >= len(toks) {
		return "", 0, false
	}
	name, ok := toks[lit].StringValue()
	if !ok {
		return "", 0, false
	}
	end := next(lit + 1)
	missingOK := "false"
	if end < len(toks) && toks[end].Text == "," {
		b := next(end + 1)
		if b >= len(toks) || (!strings.EqualFold(toks[b].Text, "true") && !strings.EqualFold(toks[b].Text, "false")) {
			return "", 0, false
		}
		missingOK = strings.ToLower(toks[b].Text)
		end = next(b + 1)
	}
	if end >= len(toks) || toks[end].Text != ")" {
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
	return catalogSchema + ".current_setting(" + toks[lit].Text + ", " + missingOK + ", " + v + ")", end, true
}
