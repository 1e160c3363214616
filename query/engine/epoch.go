package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/iceberg-go"
)

// Elapsed seconds between two timestamps. Reports measure durations as
// extract(epoch FROM later - earlier) (lab turnaround, length of stay). On TIMESTAMP
// WITH TIME ZONE values DuckDB's `-` is the ICU extension's calendar subtraction, which
// walks an ICU calendar field by field for every row: over 15M rows it took seconds,
// most of a percentile query's time, against milliseconds for integer arithmetic on
// the same values.
//
// In the engine's time zone, UTC (set and locked in engine.go), calendar days are
// 86,400 s long, so that subtraction yields the interval {days: Δ/day, micros: Δ%day}
// of the exact difference Δ in microseconds, truncated toward zero, and extract(epoch)
// of it is days·86400 + micros/10⁶ in DOUBLE. The rewrite computes exactly that from
// epoch_us(), bit for bit (TestEpochDiffRewriteMatches checks it on millions of
// values, before 1970 and negative differences included). It applies to
// date_part('epoch', a - b), extract(epoch FROM a - b) and epoch(a - b) where a and b
// are columns that resolve, in their SELECT, to TIMESTAMP WITH TIME ZONE columns of
// lake tables; anything else is left as written.

// epochDiffSQL is the replacement; __a and __b stand for the two operands.
const epochDiffSQL = "SELECT (((epoch_us(__a) - epoch_us(__b)) // 86400000000) * 86400)::DOUBLE + " +
	"((epoch_us(__a) - epoch_us(__b)) % 86400000000)::DOUBLE / 1000000"

// columnType returns the Iceberg type of a top-level column of a table's view.
func (r *tableMeta) columnType(view, column string) (iceberg.Type, bool) {
	r.mu.Lock()
	t := r.tables[view]
	r.mu.Unlock()
	if t == nil {
		return nil, false
	}
	for _, f := range t.Schema().Fields() {
		if strings.EqualFold(f.Name, column) {
			return f.Type, true
		}
	}
	return nil, false
}

// rewriteEpochDiffs rewrites, in place, the elapsed-time expressions of tree it can
// prove are over timestamptz columns, and reports whether it changed any. It runs on
// the statement as written (before the tenant scope and pruning).
func (e *Engine) rewriteEpochDiffs(ctx context.Context, q rowQueryer, tree map[string]any) (bool, error) {
	ctes := map[string]bool{}
	collectCTEs(tree, ctes)
	w := &epochRewriter{e: e, ctx: ctx, q: q, ctes: ctes}
	if err := w.walk(tree, nil); err != nil {
		return false, err
	}
	return w.changed, nil
}

type epochRewriter struct {
	e       *Engine
	ctx     context.Context
	q       rowQueryer
	ctes    map[string]bool
	tmpl    map[string]any // parsed epochDiffSQL, built on first use
	changed bool
}

// binding is one FROM item of a SELECT: its name (alias or table) and, when it is a
// lake table's view read as it is, that view.
type binding struct {
	name  string
	view  string // "" when its columns are unknown (subquery, function, CTE, time travel)
	alias string // set instead for a select-list alias, which blocks that bare name
}

// bindings lists the FROM items of a SELECT node.
func (w *epochRewriter) bindings(from any, out []binding) []binding {
	f := asMap(from)
	if f == nil {
		return out
	}
	switch f["type"] {
	case "EMPTY":
		return out
	case "JOIN":
		out = w.bindings(f["left"], out)
		return w.bindings(f["right"], out)
	case "BASE_TABLE":
		name, _ := f["table_name"].(string)
		b := binding{name: strings.ToLower(qualifierOf(f))}
		schema, _ := f["schema_name"].(string)
		cat, _ := f["catalog_name"].(string)
		if f["at_clause"] == nil && !w.ctes[strings.ToLower(name)] &&
			(schema == "" || strings.EqualFold(schema, "main")) && (cat == "" || strings.EqualFold(cat, "memory")) {
			b.view = strings.ToLower(name)
		}
		return append(out, b)
	default:
		a, _ := f["alias"].(string)
		return append(out, binding{name: strings.ToLower(a)})
	}
}

// timestampTZ reports whether a column reference resolves, among bs, to a timestamptz
// column of a lake table.
func (w *epochRewriter) timestampTZ(bs []binding, v any) bool {
	m := asMap(v)
	if m == nil || m["class"] != "COLUMN_REF" || len(bs) == 0 {
		return false
	}
	names, _ := m["column_names"].([]any)
	typeOf := func(b binding, col string) (iceberg.Type, bool) {
		if b.view == "" {
			return nil, false
		}
		return w.e.meta.columnType(b.view, col)
	}
	var t iceberg.Type
	switch len(names) {
	case 1:
		col, _ := names[0].(string)
		found := 0
		for _, b := range bs {
			if b.alias != "" {
				if b.alias == strings.ToLower(col) {
					return false
				}
				continue
			}
			if b.view == "" {
				return false // its columns might include col
			}
			if ct, ok := typeOf(b, col); ok {
				t, found = ct, found+1
			}
		}
		if found != 1 {
			return false // an outer query's column, or ambiguous
		}
	case 2:
		q, _ := names[0].(string)
		col, _ := names[1].(string)
		found := 0
		for _, b := range bs {
			if b.alias == "" && b.name == strings.ToLower(q) {
				found++
				ct, ok := typeOf(b, col)
				if !ok {
					return false
				}
				t = ct
			}
		}
		if found != 1 {
			return false
		}
	default:
		return false
	}
	return t != nil && t.Equals(iceberg.PrimitiveTypes.TimestampTz)
}

// operands returns a and b of an elapsed-time expression over a - b, nil otherwise.
func epochOperands(x map[string]any) (a, b any) {
	if x["class"] != "FUNCTION" || x["filter"] != nil || x["distinct"] == true {
		return nil, nil
	}
	if o := asMap(x["order_bys"]); o != nil {
		if l, _ := o["orders"].([]any); len(l) > 0 {
			return nil, nil
		}
	}
	if s, _ := x["schema"].(string); s != "" && s != "main" {
		return nil, nil
	}
	if c, _ := x["catalog"].(string); c != "" && c != "system" {
		return nil, nil
	}
	args, _ := x["children"].([]any)
	var diff map[string]any
	switch name, _ := x["function_name"].(string); {
	case name == "date_part" && len(args) == 2:
		c := asMap(args[0])
		if c == nil || c["class"] != "CONSTANT" {
			return nil, nil
		}
		val := asMap(c["value"])
		if s, _ := val["value"].(string); !strings.EqualFold(s, "epoch") || val["is_null"] == true {
			return nil, nil
		}
		if ty := asMap(val["type"]); ty == nil || ty["id"] != "VARCHAR" {
			return nil, nil
		}
		diff = asMap(args[1])
	case name == "epoch" && len(args) == 1:
		diff = asMap(args[0])
	default:
		return nil, nil
	}
	if diff == nil || diff["class"] != "FUNCTION" || diff["function_name"] != "-" || diff["filter"] != nil {
		return nil, nil
	}
	if s, _ := diff["schema"].(string); s != "" {
		return nil, nil
	}
	ops, _ := diff["children"].([]any)
	if len(ops) != 2 {
		return nil, nil
	}
	return ops[0], ops[1]
}

// walk visits v with bs, the bindings of the innermost SELECT around it.
func (w *epochRewriter) walk(v any, bs []binding) error {
	switch x := v.(type) {
	case []any:
		for i, c := range x {
			if m := asMap(c); m != nil {
				repl, err := w.expr(m, bs)
				if err != nil {
					return err
				}
				if repl != nil {
					x[i] = repl
					continue
				}
			}
			if err := w.walk(c, bs); err != nil {
				return err
			}
		}
	case map[string]any:
		if x["type"] == "SELECT_NODE" {
			return w.selectNode(x)
		}
		if x["class"] == "LAMBDA" {
			return nil // its parameters may shadow columns
		}
		for _, k := range sortedKeys(x) {
			if m := asMap(x[k]); m != nil {
				repl, err := w.expr(m, bs)
				if err != nil {
					return err
				}
				if repl != nil {
					x[k] = repl
					continue
				}
			}
			if err := w.walk(x[k], bs); err != nil {
				return err
			}
		}
	}
	return nil
}

// selectNode rewrites inside one SELECT. An unaliased select-list item that changes
// is given the name it had, so result column names stay as written.
func (w *epochRewriter) selectNode(node map[string]any) error {
	bs := w.bindings(node["from_table"], nil)
	list, _ := node["select_list"].([]any)
	// A select-list alias named like a column may stand for it in ORDER BY; such
	// unqualified names are left alone everywhere in this SELECT.
	for _, item := range list {
		if a, _ := asMap(item)["alias"].(string); a != "" {
			bs = append(bs, binding{alias: strings.ToLower(a)})
		}
	}
	names := make([]string, len(list))
	for i, item := range list {
		m := asMap(item)
		if m == nil {
			continue
		}
		if a, _ := m["alias"].(string); a != "" || !w.holds(m, bs) {
			continue
		}
		tmpl, err := w.template()
		if err != nil {
			return err
		}
		name, err := exprName(w.ctx, w.q, tmpl, m)
		if err != nil {
			return fmt.Errorf("naming a select-list expression: %w", err)
		}
		names[i] = name
	}
	for _, k := range sortedKeys(node) {
		if err := w.walk(node[k], bs); err != nil {
			return err
		}
	}
	for i, n := range names {
		if n != "" {
			asMap(list[i])["alias"] = n
		}
	}
	return nil
}

// holds reports whether v has an expression the rewrite replaces, outside nested
// SELECTs.
func (w *epochRewriter) holds(v any, bs []binding) bool {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			if w.holds(c, bs) {
				return true
			}
		}
	case map[string]any:
		if x["type"] == "SELECT_NODE" || x["class"] == "LAMBDA" {
			return false
		}
		if a, b := epochOperands(x); a != nil && w.timestampTZ(bs, a) && w.timestampTZ(bs, b) {
			return true
		}
		for _, c := range x {
			if w.holds(c, bs) {
				return true
			}
		}
	}
	return false
}

// expr returns the replacement of x when x is an elapsed-time expression over two
// timestamptz columns, nil otherwise.
func (w *epochRewriter) expr(x map[string]any, bs []binding) (map[string]any, error) {
	a, b := epochOperands(x)
	if a == nil || !w.timestampTZ(bs, a) || !w.timestampTZ(bs, b) {
		return nil, nil
	}
	tmpl, err := w.template()
	if err != nil {
		return nil, err
	}
	node := asMap(asMap(tmpl["statements"].([]any)[0])["node"])
	repl := deepCopy(asMap(node["select_list"].([]any)[0])).(map[string]any)
	substituteOperands(repl, a, b)
	repl["alias"] = x["alias"]
	w.changed = true
	return repl, nil
}

// template returns epochDiffSQL parsed, which also serves exprName.
func (w *epochRewriter) template() (map[string]any, error) {
	if w.tmpl == nil {
		t, err := parse(w.ctx, w.q, epochDiffSQL)
		if err != nil {
			return nil, fmt.Errorf("building elapsed-time expression: %w", err)
		}
		w.tmpl = t
	}
	return w.tmpl, nil
}

// substituteOperands replaces the placeholders __a and __b in v by copies of a and b.
func substituteOperands(v any, a, b any) {
	swap := func(c any) (any, bool) {
		m := asMap(c)
		if m == nil || m["class"] != "COLUMN_REF" {
			return nil, false
		}
		names, _ := m["column_names"].([]any)
		if len(names) != 1 {
			return nil, false
		}
		switch names[0] {
		case "__a":
			return deepCopy(a), true
		case "__b":
			return deepCopy(b), true
		}
		return nil, false
	}
	switch x := v.(type) {
	case []any:
		for i, c := range x {
			if r, ok := swap(c); ok {
				x[i] = r
				continue
			}
			substituteOperands(c, a, b)
		}
	case map[string]any:
		for k, c := range x {
			if r, ok := swap(c); ok {
				x[k] = r
				continue
			}
			substituteOperands(c, a, b)
		}
	}
}
