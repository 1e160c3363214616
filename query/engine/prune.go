package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/query/cache"
)

// File pruning. A table's view reads all of its data files, and opening each costs
// DuckDB time even when its row-group statistics then skip it. A query whose WHERE
// restricts the table's _facility, _tenant or partition day (the tenant scope's own
// filter included) reads instead only the files that can hold such rows, chosen from
// Iceberg metadata: identity(_facility) and day partition values (tables the hub
// created before it partitioned append tables by day alone have both), and the
// _facility and _tenant column bounds (the hub sorts each file by _facility, so its
// bounds span few facilities). Pruning runs after the tenant scope and only narrows the files read;
// every filter of the query still applies to their rows.

// fileMeta is what pruning knows of one data file.
type fileMeta struct {
	path        string // local cache path
	facility    string
	hasFacility bool
	day         int64 // partition day, days since 1970-01-01
	hasDay      bool
	tenant      string // the file's only _tenant value, from its bounds
	hasTenant   bool
	// facilityLow and facilityHigh bound the file's _facility values, from its column
	// bounds, when its partition does not name one facility; "" when unknown.
	facilityLow, facilityHigh string
}

// pruneIndex is a table's files as its view reads them.
type pruneIndex struct {
	columns []string // the view's columns, in order
	timeCol string   // source of the day partition, lower-cased; "" when none
	files   []fileMeta
}

// buildPruneIndex describes the data files of tbl's current snapshot (tasks, its scan
// plan), objs being their cached copies. It returns nil when pruning cannot be exact: a
// file lacks a column of the current schema (the view fills it with NULL; a subset of
// files would not).
func buildPruneIndex(tbl *table.Table, tasks []table.FileScanTask, objs []cache.Object) *pruneIndex {
	if tbl.CurrentSnapshot() == nil || len(objs) == 0 {
		return nil
	}
	local := make(map[string]string, len(objs))
	for _, o := range objs {
		local[o.Location] = o.Path
	}
	sc := tbl.Schema()
	spec := tbl.Spec()
	idx := &pruneIndex{}
	for _, f := range sc.Fields() {
		idx.columns = append(idx.columns, f.Name)
	}
	var facilityField, dayField, tenantID, facilityID = -1, -1, -1, -1
	if f, ok := sc.FindFieldByName(tenantColumn); ok {
		tenantID = f.ID
	}
	if f, ok := sc.FindFieldByName(facilityColumn); ok {
		facilityID = f.ID
	}
	for _, pf := range spec.Fields() {
		if len(pf.SourceIDs) != 1 {
			continue
		}
		src, ok := sc.FindFieldByID(pf.SourceIDs[0])
		if !ok {
			continue
		}
		switch pf.Transform.(type) {
		case iceberg.IdentityTransform:
			if src.Name == facilityColumn {
				facilityField = pf.FieldID
			}
		case iceberg.DayTransform:
			dayField = pf.FieldID
			idx.timeCol = strings.ToLower(src.Name)
		}
	}
	seen := map[string]bool{}
	for _, t := range tasks {
		df := t.File
		if seen[df.FilePath()] {
			continue
		}
		seen[df.FilePath()] = true
		path, ok := local[df.FilePath()]
		if !ok {
			return nil
		}
		sizes := df.ValueCounts()
		for _, f := range sc.Fields() {
			if _, ok := sizes[f.ID]; !ok {
				return nil
			}
		}
		m := fileMeta{path: path}
		if df.SpecID() == int32(spec.ID()) {
			part := df.Partition()
			if v, ok := part[facilityField].(string); ok {
				m.facility, m.hasFacility = v, true
			}
			if d, ok := dayValue(part[dayField]); ok {
				m.day, m.hasDay = d, true
			}
		}
		if !m.hasFacility && facilityID >= 0 {
			m.facilityBounds(df.LowerBoundValues()[facilityID], df.UpperBoundValues()[facilityID])
		}
		if tenantID >= 0 {
			lo, hi := df.LowerBoundValues()[tenantID], df.UpperBoundValues()[tenantID]
			// Bounds may be truncated prefixes; equal ones shorter than 16 bytes are exact.
			if lo != nil && string(lo) == string(hi) && len(lo) < 16 {
				m.tenant, m.hasTenant = string(lo), true
			}
		}
		idx.files = append(idx.files, m)
	}
	if len(idx.files) != len(objs) {
		return nil
	}
	return idx
}

// facilityBounds notes a file's _facility bounds (Iceberg metrics). A lower bound may
// be a truncated prefix of the least value, which still bounds it; an upper bound is
// used only when shorter than the 16 bytes bounds are truncated to, so it is exact.
// Equal exact bounds name the file's only facility, as a partition value would.
func (m *fileMeta) facilityBounds(lo, hi []byte) {
	if lo == nil || hi == nil || len(hi) >= 16 {
		return
	}
	if string(lo) == string(hi) {
		m.facility, m.hasFacility = string(lo), true
		return
	}
	m.facilityLow, m.facilityHigh = string(lo), string(hi)
}

func dayValue(v any) (int64, bool) {
	switch d := v.(type) {
	case int32:
		return int64(d), true
	case int64:
		return d, true
	case int:
		return int64(d), true
	case iceberg.Date:
		return int64(d), true
	}
	return 0, false
}

// restriction is what a query's conjuncts say of one table's rows.
type restriction struct {
	facilities map[string]bool // nil: any
	tenants    map[string]bool // nil: any
	// Time bounds in Unix microseconds; lowSet/highSet say whether each applies.
	low, high         int64
	lowSet, highSet   bool
	lowIncl, highIncl bool
	contradiction     bool
}

func (r *restriction) allow(set *map[string]bool, vals []string) {
	next := map[string]bool{}
	for _, v := range vals {
		if *set == nil || (*set)[v] {
			next[v] = true
		}
	}
	*set = next
}

func (r *restriction) keeps(f fileMeta) bool {
	if r.facilities != nil && f.hasFacility && !r.facilities[f.facility] {
		return false
	}
	if r.facilities != nil && f.facilityHigh != "" {
		in := false
		for v := range r.facilities {
			if f.facilityLow <= v && v <= f.facilityHigh {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	if r.tenants != nil && f.hasTenant && !r.tenants[f.tenant] {
		return false
	}
	if f.hasDay {
		const dayMicros = 86400 * 1_000_000
		start, end := f.day*dayMicros, (f.day+1)*dayMicros // rows in [start, end)
		if r.lowSet && end <= r.low {
			return false
		}
		if r.highSet && (start > r.high || (!r.highIncl && start == r.high)) {
			return false
		}
	}
	return true
}

// pruneFiles replaces, in the (already scoped) tree, every single-table read of a lake
// table whose WHERE rules out some of its files by a read of the others. It reports
// whether it changed the tree.
func (e *Engine) pruneFiles(ctx context.Context, q rowQueryer, tree map[string]any) (bool, error) {
	ctes := map[string]bool{}
	collectCTEs(tree, ctes)
	p := &pruner{e: e, ctx: ctx, q: q, ctes: ctes}
	if err := p.walk(tree); err != nil {
		return false, err
	}
	return p.changed, nil
}

type pruner struct {
	e       *Engine
	ctx     context.Context
	q       rowQueryer
	ctes    map[string]bool
	changed bool
}

func (p *pruner) walk(v any) error {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			if err := p.walk(c); err != nil {
				return err
			}
		}
	case map[string]any:
		if x["type"] == "SELECT_NODE" {
			if err := p.selectNode(x); err != nil {
				return err
			}
		}
		for _, k := range sortedKeys(x) {
			if err := p.walk(x[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// lakeBase returns the lake table a BASE_TABLE node reads, if any.
func (p *pruner) lakeBase(from map[string]any) (string, bool) {
	if from == nil || from["type"] != "BASE_TABLE" || from["at_clause"] != nil {
		return "", false
	}
	if s, _ := from["schema_name"].(string); s != "" && !strings.EqualFold(s, "main") {
		return "", false
	}
	if c, _ := from["catalog_name"].(string); c != "" && !strings.EqualFold(c, "memory") {
		return "", false
	}
	name, _ := from["table_name"].(string)
	if p.ctes[strings.ToLower(name)] {
		return "", false
	}
	return strings.ToLower(name), true
}

func qualifierOf(from map[string]any) string {
	a, _ := from["alias"].(string)
	if a == "" {
		a, _ = from["table_name"].(string)
	}
	return strings.ToLower(a)
}

func (p *pruner) selectNode(node map[string]any) error {
	from := asMap(node["from_table"])
	var base map[string]any // the BASE_TABLE node to replace
	var conj []restrictionSource
	if name, ok := p.lakeBase(from); ok {
		_ = name
		base = from
		conj = append(conj, restrictionSource{node["where_clause"], qualifierOf(from)})
	} else if from != nil && from["type"] == "SUBQUERY" {
		// The tenant scope's wrapper, SELECT * FROM t WHERE ..., or any such subquery:
		// the outer WHERE's columns are the table's.
		inner := asMap(asMap(from["subquery"])["node"])
		if inner == nil || inner["type"] != "SELECT_NODE" || !selectsStar(inner) {
			return nil
		}
		if mods, _ := inner["modifiers"].([]any); len(mods) > 0 {
			return nil
		}
		if g, _ := inner["group_expressions"].([]any); len(g) > 0 || inner["having"] != nil || inner["qualify"] != nil {
			return nil
		}
		if cm := asMap(inner["cte_map"]); cm != nil {
			if m, _ := cm["map"].([]any); len(m) > 0 {
				return nil
			}
		}
		ifrom := asMap(inner["from_table"])
		if _, ok := p.lakeBase(ifrom); !ok {
			return nil
		}
		if ca, _ := from["column_name_alias"].([]any); len(ca) > 0 {
			return nil
		}
		base = ifrom
		conj = append(conj, restrictionSource{inner["where_clause"], qualifierOf(ifrom)},
			restrictionSource{node["where_clause"], strings.ToLower(fmt.Sprint(from["alias"]))})
	} else {
		return nil
	}
	name := strings.ToLower(base["table_name"].(string))
	idx := p.e.meta.pruneIndex(name)
	if idx == nil {
		return nil
	}
	var r restriction
	for _, c := range conj {
		r.add(c.where, c.qualifier, idx.timeCol)
	}
	var keep []string
	for _, f := range idx.files {
		if !r.contradiction && r.keeps(f) {
			keep = append(keep, f.path)
		}
	}
	if len(keep) == len(idx.files) {
		return nil
	}
	cols := make([]string, len(idx.columns))
	for i, c := range idx.columns {
		cols[i] = quoteIdent(c)
	}
	limit := ""
	if len(keep) == 0 {
		keep, limit = []string{idx.files[0].path}, " LIMIT 0"
	}
	paths := make([]string, len(keep))
	for i, k := range keep {
		paths[i] = quoteString(k)
	}
	text := "SELECT " + strings.Join(cols, ", ") + " FROM read_parquet([" + strings.Join(paths, ", ") +
		"], union_by_name = true, hive_partitioning = false)" + limit
	t, err := parse(p.ctx, p.q, text)
	if err != nil {
		return fmt.Errorf("building pruned read of %s: %w", name, err)
	}
	sub := asMap(asMap(t["statements"].([]any)[0])["node"])
	alias, _ := base["alias"].(string)
	if alias == "" {
		alias, _ = base["table_name"].(string)
	}
	repl := map[string]any{
		"type":              "SUBQUERY",
		"alias":             alias,
		"sample":            base["sample"],
		"query_location":    base["query_location"],
		"subquery":          map[string]any{"node": sub, "named_param_map": []any{}},
		"column_name_alias": []any{},
	}
	if ca, _ := base["column_name_alias"].([]any); len(ca) > 0 {
		repl["column_name_alias"] = ca
	}
	clear(base)
	for k, v := range repl {
		base[k] = v
	}
	p.changed = true
	return nil
}

type restrictionSource struct {
	where     any
	qualifier string
}

func selectsStar(n map[string]any) bool {
	list, _ := n["select_list"].([]any)
	if len(list) != 1 {
		return false
	}
	s := asMap(list[0])
	if s["class"] != "STAR" || s["columns"] == true || s["expr"] != nil {
		return false
	}
	for _, k := range []string{"exclude_list", "replace_list", "rename_list", "qualified_exclude_list"} {
		if l, _ := s[k].([]any); len(l) > 0 {
			return false
		}
	}
	return true
}

// add narrows r by the top-level conjuncts of where that it understands; it ignores
// the others, which only means fewer files are ruled out.
func (r *restriction) add(where any, qualifier, timeCol string) {
	w := asMap(where)
	if w == nil {
		return
	}
	if w["class"] == "CONJUNCTION" && w["type"] == "CONJUNCTION_AND" {
		cs, _ := w["children"].([]any)
		for _, c := range cs {
			r.add(c, qualifier, timeCol)
		}
		return
	}
	col := func(v any) string {
		m := asMap(v)
		if m == nil || m["class"] != "COLUMN_REF" {
			return ""
		}
		names, _ := m["column_names"].([]any)
		switch len(names) {
		case 1:
		case 2:
			if q, _ := names[0].(string); strings.ToLower(q) != qualifier {
				return ""
			}
		default:
			return ""
		}
		n, _ := names[len(names)-1].(string)
		return strings.ToLower(n)
	}
	str := func(v any) (string, bool) {
		m := asMap(v)
		if m == nil || m["class"] != "CONSTANT" {
			return "", false
		}
		val := asMap(m["value"])
		s, ok := val["value"].(string)
		return s, ok && val["is_null"] != true
	}
	switch w["class"] {
	case "COMPARISON":
		l, rt := w["left"], w["right"]
		typ, _ := w["type"].(string)
		if c := col(rt); c != "" && col(l) == "" {
			l, rt = rt, l
			typ = mirror[typ]
		}
		c := col(l)
		if c == "" {
			return
		}
		if c == facilityColumn || c == tenantColumn {
			if v, ok := str(rt); ok && typ == "COMPARE_EQUAL" {
				r.allowCol(c, []string{v})
			}
			return
		}
		if c == timeCol && timeCol != "" {
			if t, ok := timeConstant(asMap(rt)); ok {
				r.bound(typ, t)
			}
		}
	case "OPERATOR":
		if w["type"] != "COMPARE_IN" {
			return
		}
		cs, _ := w["children"].([]any)
		if len(cs) < 2 {
			return
		}
		c := col(cs[0])
		if c != facilityColumn && c != tenantColumn {
			return
		}
		var vals []string
		for _, v := range cs[1:] {
			s, ok := str(v)
			if !ok {
				return
			}
			vals = append(vals, s)
		}
		r.allowCol(c, vals)
	case "BETWEEN":
		if c := col(w["input"]); c != "" && c == timeCol {
			if t, ok := timeConstant(asMap(w["lower"])); ok {
				r.bound("COMPARE_GREATERTHANOREQUALTO", t)
			}
			if t, ok := timeConstant(asMap(w["upper"])); ok {
				r.bound("COMPARE_LESSTHANOREQUALTO", t)
			}
		}
	}
}

var mirror = map[string]string{
	"COMPARE_EQUAL": "COMPARE_EQUAL", "COMPARE_NOTEQUAL": "COMPARE_NOTEQUAL",
	"COMPARE_LESSTHAN": "COMPARE_GREATERTHAN", "COMPARE_GREATERTHAN": "COMPARE_LESSTHAN",
	"COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO", "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO",
}

func (r *restriction) allowCol(c string, vals []string) {
	if c == facilityColumn {
		r.allow(&r.facilities, vals)
	} else {
		r.allow(&r.tenants, vals)
	}
	if (r.facilities != nil && len(r.facilities) == 0) || (r.tenants != nil && len(r.tenants) == 0) {
		r.contradiction = true
	}
}

func (r *restriction) bound(typ string, t time.Time) {
	us := t.UnixMicro()
	switch typ {
	case "COMPARE_GREATERTHANOREQUALTO", "COMPARE_GREATERTHAN":
		if !r.lowSet || us > r.low {
			r.low, r.lowSet, r.lowIncl = us, true, typ == "COMPARE_GREATERTHANOREQUALTO"
		}
	case "COMPARE_LESSTHANOREQUALTO", "COMPARE_LESSTHAN":
		if !r.highSet || us < r.high {
			r.high, r.highSet, r.highIncl = us, true, typ == "COMPARE_LESSTHANOREQUALTO"
		}
	case "COMPARE_EQUAL":
		r.bound("COMPARE_GREATERTHANOREQUALTO", t)
		r.bound("COMPARE_LESSTHANOREQUALTO", t)
	}
}

// timeConstant reads a timestamp or date constant (or a cast of one) as DuckDB would
// with the engine's UTC time zone; it declines anything it is not sure of.
func timeConstant(v map[string]any) (time.Time, bool) {
	if v == nil {
		return time.Time{}, false
	}
	if v["class"] == "CAST" {
		switch asMap(v["cast_type"])["id"] {
		case "DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE":
			return timeConstant(asMap(v["child"]))
		}
		return time.Time{}, false
	}
	if v["class"] != "CONSTANT" {
		return time.Time{}, false
	}
	val := asMap(v["value"])
	s, ok := val["value"].(string)
	if !ok || val["is_null"] == true {
		return time.Time{}, false
	}
	s = strings.TrimSpace(s)
	for _, layout := range []string{"2006-01-02", "2006-01-02 15:04:05", "2006-01-02 15:04:05Z07", "2006-01-02 15:04:05Z07:00",
		"2006-01-02T15:04:05Z07:00", "2006-01-02T15:04:05", "2006-01-02 15:04:05.999999", "2006-01-02 15:04:05.999999Z07"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
