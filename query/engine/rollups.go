package engine

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog/rollup"
	"github.com/medlake/medlake/protocol/feed"
	"github.com/medlake/medlake/query/cache"
)

// Rollups. A rollup table (catalog/rollup) holds per tenant, facility and day partial
// aggregates of a lake table. A query that asks only for what those hold (it groups by,
// filters on and selects rollup dimensions, and aggregates with count, sum, min, max or
// avg) is answered from the rollup instead: the rewrite works on DuckDB's parse tree,
// before the tenant scope, which then filters the rollup table like any lake table (it
// has _tenant and _facility). A rollup is used only while it describes its table
// exactly (rollup.Consistent on the snapshots the views show); otherwise, and for any
// query shape the rewrite does not know, the table itself is read.

// tableMeta tracks, per table, the Iceberg metadata of the snapshot its view shows:
// which rollups match their tables, and the files pruning chooses from (prune.go).
// Safe for concurrent use.
type tableMeta struct {
	// plan lists the data files of a table's current snapshot, as its view was planned
	// (from cached manifest entries); set once, before the first note.
	plan func(context.Context, *table.Table) ([]table.FileScanTask, error)

	mu     sync.Mutex
	tables map[string]*table.Table // by view name; guarded by mu
	usable map[string]bool         // base table name -> its rollup may answer; guarded by mu
	prune  map[string]*pruneIndex  // by view name; guarded by mu

	aggOnce sync.Once
	aggs    map[string]bool // DuckDB's aggregate function names; set once by aggOnce
	aggErr  error
}

// note records the metadata behind a table's new view (objs are the files it reads)
// and re-checks the rollup pairs it belongs to. tbl nil: the table is gone.
func (r *tableMeta) note(ctx context.Context, name string, tbl *table.Table, objs []cache.Object, logger *slog.Logger) {
	var idx *pruneIndex
	if tbl != nil && tbl.CurrentSnapshot() != nil && len(objs) > 0 {
		if tasks, err := r.plan(ctx, tbl); err == nil {
			idx = buildPruneIndex(tbl, tasks, objs)
		} else {
			logger.Warn("describing data files for pruning failed; queries read every file", "table", name, "err", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tables == nil {
		r.tables, r.usable, r.prune = map[string]*table.Table{}, map[string]bool{}, map[string]*pruneIndex{}
	}
	if tbl == nil {
		delete(r.tables, name)
		delete(r.prune, name)
	} else {
		r.tables[name] = tbl
		r.prune[name] = idx
	}
	base := strings.TrimSuffix(name, rollup.Suffix)
	def, ok := rollup.Lookup(base)
	if !ok {
		return
	}
	bt, rt := r.tables[base], r.tables[def.Name()]
	r.usable[base] = bt != nil && rt != nil && rollup.Consistent(bt, rt)
}

// pruneIndex returns the files of a table's view, nil when pruning does not apply.
func (r *tableMeta) pruneIndex(name string) *pruneIndex {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prune[name]
}

// def returns the rollup of base when it may answer queries now.
func (r *tableMeta) def(base string) (rollup.Def, *iceberg.Schema, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.usable[base] {
		return rollup.Def{}, nil, false
	}
	d, _ := rollup.Lookup(base)
	return d, r.tables[base].Schema(), true
}

// aggregates returns the names of DuckDB's aggregate functions, read once.
func (e *Engine) aggregates(ctx context.Context) (map[string]bool, error) {
	r := &e.meta
	r.aggOnce.Do(func() {
		rows, err := e.db.QueryContext(ctx, "SELECT DISTINCT lower(function_name) FROM duckdb_functions() WHERE function_type = 'aggregate'")
		if err != nil {
			r.aggErr = fmt.Errorf("listing aggregate functions: %w", err)
			return
		}
		defer rows.Close()
		aggs := map[string]bool{}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				r.aggErr = fmt.Errorf("listing aggregate functions: %w", err)
				return
			}
			aggs[n] = true
		}
		if err := rows.Err(); err != nil {
			r.aggErr = fmt.Errorf("listing aggregate functions: %w", err)
			return
		}
		r.aggs = aggs
	})
	return r.aggs, r.aggErr
}

// useRollups rewrites, in place, every SELECT of tree that a usable rollup can answer,
// and reports whether it rewrote any. q parses the replacement expressions.
func (e *Engine) useRollups(ctx context.Context, q rowQueryer, tree map[string]any) (bool, error) {
	aggs, err := e.aggregates(ctx)
	if err != nil {
		return false, err
	}
	ctes := map[string]bool{}
	collectCTEs(tree, ctes)
	rw := &rollupRewriter{e: e, ctx: ctx, q: q, aggs: aggs, ctes: ctes}
	if err := rw.walk(tree); err != nil {
		return false, err
	}
	return rw.rewrote, nil
}

type rollupRewriter struct {
	e       *Engine
	ctx     context.Context
	q       rowQueryer
	aggs    map[string]bool
	ctes    map[string]bool
	rewrote bool
	tmpl    map[string]any // a parsed SELECT, for exprName
}

// holdsAny reports whether v is or contains the node of one of repl.
func holdsAny(v any, repl []*replacement) bool {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			if holdsAny(c, repl) {
				return true
			}
		}
	case map[string]any:
		for _, r := range repl {
			if sameMap(x, r.node) {
				return true
			}
		}
		for _, c := range x {
			if holdsAny(c, repl) {
				return true
			}
		}
	}
	return false
}

// sameMap reports whether a and b are the same map (the same tree node), not equal ones.
func sameMap(a, b map[string]any) bool {
	return a != nil && b != nil && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func (rw *rollupRewriter) walk(v any) error {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			if err := rw.walk(c); err != nil {
				return err
			}
		}
	case map[string]any:
		if t, _ := x["type"].(string); t == "SELECT_NODE" {
			ok, err := rw.selectNode(x)
			if err != nil || ok {
				return err
			}
		}
		for _, k := range sortedKeys(x) {
			if err := rw.walk(x[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// target is the table a candidate SELECT reads and its rollup.
type target struct {
	def      rollup.Def
	alias    string          // qualifier column references may use, lower-cased
	dims     map[string]bool // columns kept as they are: _tenant, _facility, Dims (and Time when a date)
	measures map[string]bool
	time     string // the timestamp column only allowed truncated to days or coarser
	columns  map[string]bool
	aliases  map[string]bool // of the select list, lower-cased: references to them are checked where they are defined
}

// selectNode rewrites node to read the rollup when it can; it reports whether it did.
// Every check failing leaves node untouched.
func (rw *rollupRewriter) selectNode(node map[string]any) (bool, error) {
	from, _ := node["from_table"].(map[string]any)
	if from == nil || from["type"] != "BASE_TABLE" || from["at_clause"] != nil || from["sample"] != nil || node["sample"] != nil || node["qualify"] != nil {
		return false, nil
	}
	if s, _ := from["schema_name"].(string); s != "" && !strings.EqualFold(s, "main") {
		return false, nil
	}
	if c, _ := from["catalog_name"].(string); c != "" && !strings.EqualFold(c, "memory") {
		return false, nil
	}
	if ca, _ := from["column_name_alias"].([]any); len(ca) > 0 {
		return false, nil
	}
	if cm, _ := node["cte_map"].(map[string]any); cm != nil {
		if m, _ := cm["map"].([]any); len(m) > 0 {
			return false, nil
		}
	}
	if h, _ := node["aggregate_handling"].(string); h != "STANDARD_HANDLING" {
		return false, nil
	}
	name, _ := from["table_name"].(string)
	base := strings.ToLower(name)
	if rw.ctes[base] {
		return false, nil
	}
	def, schema, ok := rw.e.meta.def(base)
	if !ok {
		return false, nil
	}
	t := &target{def: def, dims: map[string]bool{feed.ColTenant: true, feed.ColFacility: true},
		measures: map[string]bool{}, columns: map[string]bool{}, aliases: map[string]bool{}}
	t.alias, _ = from["alias"].(string)
	if t.alias == "" {
		t.alias = name
	}
	t.alias = strings.ToLower(t.alias)
	for _, d := range def.Dims {
		t.dims[d] = true
	}
	for _, m := range def.Measures {
		t.measures[m] = true
	}
	if f, ok := schema.FindFieldByName(def.Time); ok {
		if _, isDate := f.Type.(iceberg.DateType); isDate {
			t.dims[def.Time] = true
		} else {
			t.time = def.Time
		}
	}
	for _, f := range schema.Fields() {
		t.columns[strings.ToLower(f.Name)] = true
	}
	t.columns[rollup.ColCount] = true

	// Only aggregate queries: a plain SELECT returns a row per table row.
	groups, _ := node["group_expressions"].([]any)
	selects, _ := node["select_list"].([]any)
	aggregated := len(groups) > 0
	for _, s := range selects {
		if rw.hasAggregate(s) {
			aggregated = true
		}
		// An alias named like a column could bind differently in the rollup.
		if m, ok := s.(map[string]any); ok {
			if a, _ := m["alias"].(string); a != "" {
				if t.columns[strings.ToLower(a)] || strings.Contains(strings.ToLower(a), "__") {
					return false, nil
				}
				t.aliases[strings.ToLower(a)] = true
			}
		}
	}
	if !aggregated {
		return false, nil
	}

	var repl []*replacement
	check := func(v any, aggOK, positional bool) (bool, error) {
		if v == nil {
			return true, nil
		}
		if positional && isIntConstant(v) {
			return true, nil
		}
		return rw.expr(t, v, aggOK, &repl)
	}
	for _, s := range selects {
		if ok, err := check(s, true, false); !ok || err != nil {
			return false, err
		}
	}
	for _, g := range groups {
		if ok, err := check(g, false, true); !ok || err != nil {
			return false, err
		}
	}
	for _, k := range []string{"where_clause", "having"} {
		if ok, err := check(node[k], k == "having", false); !ok || err != nil {
			return false, err
		}
	}
	mods, _ := node["modifiers"].([]any)
	for _, m := range mods {
		mm, _ := m.(map[string]any)
		switch mm["type"] {
		case "ORDER_MODIFIER":
			orders, _ := mm["orders"].([]any)
			for _, o := range orders {
				om, _ := o.(map[string]any)
				if ok, err := check(om["expression"], true, true); !ok || err != nil {
					return false, err
				}
			}
		case "LIMIT_MODIFIER":
			for _, k := range []string{"limit", "offset"} {
				if ok, err := check(mm[k], false, false); !ok || err != nil {
					return false, err
				}
			}
		case "DISTINCT_MODIFIER":
			targets, _ := mm["distinct_on_targets"].([]any)
			for _, d := range targets {
				if ok, err := check(d, false, true); !ok || err != nil {
					return false, err
				}
			}
		default:
			return false, nil
		}
	}
	if err := rw.build(repl); err != nil {
		return false, err
	}
	// Result columns keep the names the query gives them: an unaliased item holding a
	// replaced aggregate is aliased by its own SQL, as DuckDB names it.
	for _, sitem := range selects {
		m := asMap(sitem)
		if a, _ := m["alias"].(string); a != "" || !holdsAny(m, repl) {
			continue
		}
		name, err := exprName(rw.ctx, rw.q, rw.tmpl, m)
		if err != nil {
			return false, err
		}
		m["alias"] = name
	}
	for _, r := range repl {
		alias, _ := r.node["alias"].(string)
		clear(r.node)
		for k, v := range r.with {
			r.node[k] = v
		}
		r.node["alias"] = alias
	}
	from["table_name"] = def.Name()
	if a, _ := from["alias"].(string); a == "" {
		from["alias"] = name
	}
	rw.rewrote = true
	return true, nil
}

// replacement is an aggregate of the query and the rollup expression that replaces it.
type replacement struct {
	node   map[string]any // the query's aggregate node, replaced in place
	sql    string         // the rollup expression, as SQL
	filter any            // the aggregate's FILTER, moved to every aggregate of sql
	alias  string         // the result column's name
	with   map[string]any // the parsed replacement
}

func (rw *rollupRewriter) hasAggregate(v any) bool {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			if rw.hasAggregate(c) {
				return true
			}
		}
	case map[string]any:
		if x["class"] == "FUNCTION" {
			if n, _ := x["function_name"].(string); rw.aggs[strings.ToLower(n)] {
				return true
			}
		}
		for _, c := range x {
			if rw.hasAggregate(c) {
				return true
			}
		}
	}
	return false
}

func isIntConstant(v any) bool {
	m, _ := v.(map[string]any)
	if m == nil || m["class"] != "CONSTANT" {
		return false
	}
	val, _ := m["value"].(map[string]any)
	typ, _ := val["type"].(map[string]any)
	id, _ := typ["id"].(string)
	return strings.Contains(id, "INT")
}

// dayParts are the date_trunc parts at a day or coarser: truncating a day keeps them.
var dayParts = map[string]bool{"day": true, "week": true, "month": true, "quarter": true, "year": true,
	"decade": true, "century": true, "millennium": true, "isoyear": true}

// volatile functions give another value per call: per rollup row is not per table row.
var volatile = map[string]bool{"random": true, "uuid": true, "gen_random_uuid": true, "nextval": true,
	"setseed": true, "currval": true}

// column returns the lower-cased column an expression references, if it is a column
// reference to the target table.
func (t *target) column(x map[string]any) (string, bool) {
	if x["class"] != "COLUMN_REF" {
		return "", false
	}
	names, _ := x["column_names"].([]any)
	switch len(names) {
	case 1:
	case 2:
		q, _ := names[0].(string)
		if strings.ToLower(q) != t.alias {
			return "", false
		}
	default:
		return "", false
	}
	n, _ := names[len(names)-1].(string)
	return strings.ToLower(n), true
}

// expr checks that v means the same over the rollup's rows as over the table's, noting
// the aggregates to replace. aggOK says whether aggregates may appear here.
func (rw *rollupRewriter) expr(t *target, v any, aggOK bool, repl *[]*replacement) (bool, error) {
	x, ok := v.(map[string]any)
	if !ok {
		return false, nil
	}
	class, _ := x["class"].(string)
	switch class {
	case "CONSTANT", "PARAMETER":
		return true, nil
	case "COLUMN_REF":
		if names, _ := x["column_names"].([]any); len(names) == 1 {
			if n, _ := names[0].(string); t.aliases[strings.ToLower(n)] {
				return true, nil
			}
		}
		c, ok := t.column(x)
		return ok && t.dims[c], nil
	case "CAST":
		if c, ok := t.column(asMap(x["child"])); ok && c == t.time && t.time != "" {
			typ, _ := x["cast_type"].(map[string]any)
			return typ["id"] == "DATE" && x["try_cast"] == false, nil
		}
		return rw.expr(t, x["child"], aggOK, repl)
	case "COMPARISON":
		if ok, handled := t.dayComparison(x); handled {
			return ok, nil
		}
		for _, k := range []string{"left", "right"} {
			if ok, err := rw.expr(t, x[k], aggOK, repl); !ok || err != nil {
				return ok, err
			}
		}
		return true, nil
	case "FUNCTION":
		return rw.function(t, x, aggOK, repl)
	case "CONJUNCTION", "OPERATOR":
		return rw.children(t, x["children"], aggOK, repl)
	case "CASE":
		checks, _ := x["case_checks"].([]any)
		for _, c := range checks {
			cm := asMap(c)
			for _, k := range []string{"when_expr", "then_expr"} {
				if ok, err := rw.expr(t, cm[k], aggOK, repl); !ok || err != nil {
					return ok, err
				}
			}
		}
		return rw.expr(t, x["else_expr"], aggOK, repl)
	case "BETWEEN":
		for _, k := range []string{"input", "lower", "upper"} {
			if ok, err := rw.expr(t, x[k], aggOK, repl); !ok || err != nil {
				return ok, err
			}
		}
		return true, nil
	}
	return false, nil
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func (rw *rollupRewriter) children(t *target, v any, aggOK bool, repl *[]*replacement) (bool, error) {
	cs, _ := v.([]any)
	for _, c := range cs {
		if ok, err := rw.expr(t, c, aggOK, repl); !ok || err != nil {
			return ok, err
		}
	}
	return true, nil
}

// dayComparison handles a comparison of the timestamp column with a constant at
// midnight UTC by the one operator each side that means the same of the day:
// ts >= midnight and ts < midnight (and their mirrors).
func (t *target) dayComparison(x map[string]any) (ok, handled bool) {
	if t.time == "" {
		return false, false
	}
	typ, _ := x["type"].(string)
	left, right := asMap(x["left"]), asMap(x["right"])
	lc, lok := t.column(left)
	rc, rok := t.column(right)
	var other map[string]any
	switch {
	case lok && lc == t.time:
		other = right
		if typ != "COMPARE_GREATERTHANOREQUALTO" && typ != "COMPARE_LESSTHAN" {
			return false, true
		}
	case rok && rc == t.time:
		other = left
		if typ != "COMPARE_LESSTHANOREQUALTO" && typ != "COMPARE_GREATERTHAN" {
			return false, true
		}
	default:
		return false, false
	}
	return midnightConstant(other), true
}

// midnightConstant reports whether v is a constant (or a cast of one) naming midnight
// UTC: '2025-03-01', '2025-03-01 00:00:00', '2025-03-01 00:00:00+00'.
func midnightConstant(v map[string]any) bool {
	if v == nil {
		return false
	}
	if v["class"] == "CAST" {
		typ := asMap(v["cast_type"])
		switch typ["id"] {
		case "DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE":
		default:
			return false
		}
		return midnightConstant(asMap(v["child"]))
	}
	if v["class"] != "CONSTANT" {
		return false
	}
	val := asMap(v["value"])
	if val["is_null"] == true {
		return false
	}
	s, ok := val["value"].(string)
	if !ok {
		return false
	}
	for _, layout := range []string{"2006-01-02", "2006-01-02 15:04:05", "2006-01-02 15:04:05Z07", "2006-01-02 15:04:05Z07:00", "2006-01-02T15:04:05Z07:00", "2006-01-02T15:04:05"} {
		if tm, err := time.Parse(layout, strings.TrimSpace(s)); err == nil {
			_, off := tm.Zone()
			return off == 0 && tm.Equal(tm.Truncate(24*time.Hour))
		}
	}
	return false
}

func (rw *rollupRewriter) function(t *target, x map[string]any, aggOK bool, repl *[]*replacement) (bool, error) {
	name, _ := x["function_name"].(string)
	name = strings.ToLower(name)
	if s, _ := x["schema"].(string); s != "" || volatile[name] {
		return false, nil
	}
	args, _ := x["children"].([]any)
	if !rw.aggs[name] {
		if name == "date_trunc" && len(args) == 2 {
			part := asMap(args[0])
			if c, ok := t.column(asMap(args[1])); ok && c == t.time && t.time != "" {
				p, _ := asMap(part["value"])["value"].(string)
				return part["class"] == "CONSTANT" && dayParts[strings.ToLower(p)], nil
			}
		}
		if x["filter"] != nil || x["distinct"] == true {
			return false, nil
		}
		return rw.children(t, args, aggOK, repl)
	}
	if !aggOK || x["distinct"] == true || x["export_state"] == true {
		return false, nil
	}
	if ob := asMap(x["order_bys"]); ob != nil {
		if orders, _ := ob["orders"].([]any); len(orders) > 0 {
			return false, nil
		}
	}
	if f := x["filter"]; f != nil {
		if ok, err := rw.expr(t, f, false, repl); !ok || err != nil {
			return ok, err
		}
	}
	r := &replacement{node: x, filter: x["filter"]}
	measure := ""
	if len(args) == 1 {
		if c, ok := t.column(asMap(args[0])); ok && t.measures[c] {
			measure = c
		}
	}
	col := func(agg string) string { return quoteIdent(rollup.MeasureColumn(measure, agg)) }
	switch {
	case name == "count_star" && len(args) == 0:
		r.sql = "CAST(COALESCE(sum(" + quoteIdent(rollup.ColCount) + "), 0) AS BIGINT)"
	case measure != "" && name == "count":
		r.sql = "CAST(COALESCE(sum(" + col("count") + "), 0) AS BIGINT)"
	case measure != "" && name == "sum":
		r.sql = "sum(" + col("sum") + ")"
	case measure != "" && (name == "min" || name == "max"):
		r.sql = name + "(" + col(name) + ")"
	case measure != "" && (name == "avg" || name == "mean"):
		r.sql = "CAST(sum(" + col("sum") + ") / sum(" + col("count") + ") AS DOUBLE)"
	case (name == "min" || name == "max") && len(args) == 1:
		// Over dimensions only: the same values, each once or more, give the same answer.
		if ok, err := rw.expr(t, args[0], false, repl); !ok || err != nil {
			return ok, err
		}
		return true, nil
	default:
		return false, nil
	}
	r.alias, _ = x["alias"].(string)
	*repl = append(*repl, r)
	return true, nil
}

// build parses every replacement's SQL in one statement, names each result column as
// the aggregate it replaces was named, and moves the aggregate's FILTER into it.
func (rw *rollupRewriter) build(repl []*replacement) error {
	if len(repl) == 0 {
		return nil
	}
	texts := make([]string, len(repl))
	for i, r := range repl {
		texts[i] = r.sql
	}
	tree, err := parse(rw.ctx, rw.q, "SELECT "+strings.Join(texts, ", "))
	if err != nil {
		return fmt.Errorf("building rollup expressions: %w", err)
	}
	node := asMap(asMap(tree["statements"].([]any)[0])["node"])
	list, _ := node["select_list"].([]any)
	if len(list) != len(repl) {
		return fmt.Errorf("building rollup expressions: got %d, want %d", len(list), len(repl))
	}
	rw.tmpl = tree
	for i, r := range repl {
		with := asMap(list[i])
		with["alias"] = r.alias
		if r.filter != nil {
			setFilters(with, r.filter)
		}
		r.with = with
	}
	return nil
}

// exprName is the column name DuckDB gives an unaliased expression: its SQL text.
func exprName(ctx context.Context, q rowQueryer, tmpl map[string]any, expr map[string]any) (string, error) {
	t := deepCopy(tmpl).(map[string]any)
	node := asMap(asMap(t["statements"].([]any)[0])["node"])
	node["select_list"] = []any{deepCopy(expr)}
	text, err := deparse(ctx, q, t)
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(text, "SELECT "), nil
}

func setFilters(v any, filter any) {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			setFilters(c, filter)
		}
	case map[string]any:
		if x["class"] == "FUNCTION" {
			if n, _ := x["function_name"].(string); n == "sum" || n == "min" || n == "max" {
				x["filter"] = deepCopy(filter)
			}
		}
		for _, c := range x {
			setFilters(c, filter)
		}
	}
}
