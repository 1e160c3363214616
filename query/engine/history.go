package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/query/cache"
)

// History, for admins: time travel and the changes between two points.
//
//	SELECT * FROM patients AT (VERSION => 6459237847722525901)   -- a snapshot id
//	SELECT * FROM patients AT (TIMESTAMP => '2026-12-02 18:00:00') -- the snapshot current then (UTC)
//	SELECT * FROM table_changes('patients', FROM, TO)
//
// FROM and TO are snapshot ids or timestamps (text); FROM may be 0, the empty table.
// table_changes returns one row per key whose row differs between the two states:
// op ('insert', 'update' or 'delete'), the key columns (the table property
// PropKeys that the hub sets on keyed tables; lineage _batch_id and _row otherwise),
// and before and after, STRUCTs of the whole row (NULL where the key is absent).
// Each snapshot read is a view of its own, built on first use from the snapshot's
// files (deletes applied as for current views) and kept, up to maxHistoryViews.
//
// Tenant users are refused both (SQLSTATE 42501): their scope filter applies to the
// current views only.

// PropKeys is the table property naming, comma-separated, the columns that identify a
// row of an upsert, cdc or duplicates-drop table.
const PropKeys = "medlake.keys"

// historySchema holds the history views, apart from the lake tables' views in main
// (which pgwire's catalog lists as tables); tenant users cannot read other schemas.
const historySchema = "medlake_history"

// maxHistoryViews bounds the snapshot views kept; the oldest is dropped beyond it.
const maxHistoryViews = 64

type historyView struct {
	name    string
	objects []cache.Object
}

// historyResolver rewrites an admin's AT clauses and table_changes calls into
// references to snapshot views, building them as needed.
type historyResolver struct {
	ctx  context.Context
	e    *Engine
	used bool
}

// at replaces a lake table reference with an AT clause by its snapshot view.
func (h *historyResolver) at(x map[string]any, t tableScope) (any, error) {
	at, _ := x["at_clause"].(map[string]any)
	unit, _ := at["unit"].(string)
	v, err := constant(at["expr"])
	if err != nil {
		return nil, denied("time travel on %s: %v", t.name, err)
	}
	tbl, err := h.e.loadTable(h.ctx, t.name)
	if err != nil {
		return nil, err
	}
	var snap int64
	switch strings.ToUpper(unit) {
	case "VERSION":
		snap, err = snapshotOf(tbl, v, false)
	case "TIMESTAMP":
		snap, err = snapshotOf(tbl, v, true)
	default:
		err = fmt.Errorf("AT (%s => ...) is not supported: use VERSION (a snapshot id) or TIMESTAMP", unit)
	}
	if err != nil {
		return nil, &Error{Code: CodeUndefinedTable, Msg: fmt.Sprintf("time travel on %s: %v", t.name, err)}
	}
	name, err := h.e.snapshotView(h.ctx, tbl, t.name, snap)
	if err != nil {
		return nil, err
	}
	h.used = true
	out := deepCopy(x).(map[string]any)
	delete(out, "at_clause")
	out["schema_name"] = historySchema
	out["catalog_name"] = ""
	out["table_name"] = name
	if a, _ := out["alias"].(string); a == "" {
		out["alias"] = t.name
	}
	return out, nil
}

// changes replaces a table_changes(table, from, to) call by its view, and returns the
// table it reads.
func (h *historyResolver) changes(x map[string]any) (any, string, error) {
	fn, _ := x["function"].(map[string]any)
	args, _ := fn["children"].([]any)
	if len(args) != 3 {
		return nil, "", denied("table_changes takes 3 arguments (table, from, to), got %d", len(args))
	}
	var vals [3]any
	for i, a := range args {
		v, err := constant(a)
		if err != nil {
			return nil, "", denied("table_changes argument %d: %v", i+1, err)
		}
		vals[i] = v
	}
	name, ok := vals[0].(string)
	if !ok {
		return nil, "", denied("table_changes: the first argument is the table name, as text")
	}
	name = strings.ToLower(name)
	if _, ok := h.e.scopeTables()[name]; !ok {
		return nil, "", &Error{Code: CodeUndefinedTable, Msg: fmt.Sprintf("relation %q does not exist", name)}
	}
	tbl, err := h.e.loadTable(h.ctx, name)
	if err != nil {
		return nil, "", err
	}
	var snaps [2]int64
	for i, v := range vals[1:] {
		if n, ok := v.(int64); ok && n == 0 {
			continue // the empty table
		}
		_, isText := v.(string)
		if snaps[i], err = snapshotOf(tbl, v, isText); err != nil {
			return nil, "", &Error{Code: CodeUndefinedTable, Msg: fmt.Sprintf("table_changes on %s: %v", name, err)}
		}
	}
	view, err := h.e.changesView(h.ctx, tbl, name, snaps[0], snaps[1])
	if err != nil {
		return nil, "", err
	}
	h.used = true
	alias, _ := x["alias"].(string)
	if alias == "" {
		alias = "table_changes"
	}
	return map[string]any{"type": "BASE_TABLE", "alias": alias, "catalog_name": "", "schema_name": historySchema, "table_name": view,
		"column_name_alias": x["column_name_alias"], "query_location": x["query_location"], "sample": x["sample"]}, name, nil
}

// constant returns the value of a parse tree constant (or a cast of one): int64 or
// string.
func constant(v any) (any, error) {
	x, _ := v.(map[string]any)
	if x == nil {
		return nil, errors.New("missing value")
	}
	if c, _ := x["class"].(string); c == "CAST" {
		return constant(x["child"])
	}
	if c, _ := x["class"].(string); c != "CONSTANT" {
		return nil, errors.New("only constants are accepted")
	}
	val, _ := x["value"].(map[string]any)
	if isNull, _ := val["is_null"].(bool); isNull {
		return nil, errors.New("NULL is not a point in time")
	}
	switch raw := val["value"].(type) {
	case json.Number:
		n, err := raw.Int64()
		if err != nil {
			return nil, fmt.Errorf("%s is not a snapshot id", raw)
		}
		return n, nil
	case string:
		return raw, nil
	}
	return nil, fmt.Errorf("unsupported constant %v", val["value"])
}

// timeLayouts are the accepted timestamp texts (UTC unless an offset is given).
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02"}

// snapshotOf resolves v to a snapshot of tbl: a snapshot id (int64 or its text), or,
// when asOf, a timestamp: the snapshot that was current then.
func snapshotOf(tbl *table.Table, v any, asOf bool) (int64, error) {
	if !asOf {
		id, ok := v.(int64)
		if s, isText := v.(string); isText {
			n, err := strconv.ParseInt(s, 10, 64)
			id, ok = n, err == nil
		}
		if !ok {
			return 0, fmt.Errorf("%v is not a snapshot id", v)
		}
		if tbl.SnapshotByID(id) == nil {
			return 0, fmt.Errorf("no snapshot %d (never existed, or expired)", id)
		}
		return id, nil
	}
	text, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("%v is not a timestamp", v)
	}
	var at time.Time
	var err error
	for _, l := range timeLayouts {
		if at, err = time.Parse(l, text); err == nil {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not a timestamp (want YYYY-MM-DD HH:MM:SS, UTC)", text)
	}
	ms := at.UnixMilli()
	for s := tbl.CurrentSnapshot(); s != nil; {
		if s.TimestampMs <= ms {
			return s.SnapshotID, nil
		}
		if s.ParentSnapshotID == nil {
			break
		}
		s = tbl.SnapshotByID(*s.ParentSnapshotID)
	}
	return 0, fmt.Errorf("no snapshot at or before %s", at.UTC().Format(time.RFC3339))
}

// loadTable loads a table's newest metadata for an admin's history query as a
// refresh does: from the location the catalog holds, through the engine's shared IO
// and manifest cache.
func (e *Engine) loadTable(ctx context.Context, name string) (*table.Table, error) {
	t := refreshTarget{name: name, ident: e.ident(name)}
	if e.locator != nil {
		locs, err := e.locator.TableLocations(ctx, e.namespace)
		if err != nil {
			return nil, fmt.Errorf("locating table %s: %w", name, err)
		}
		if t.metaLoc = locs[name]; t.metaLoc == "" {
			return nil, fmt.Errorf("table %s is not in the catalog", name)
		}
	}
	tbl, err := e.loadTarget(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", name, err)
	}
	return tbl, nil
}

// snapshotView returns the name of the view of tbl at snapshot snap (0: empty),
// creating it on first use.
func (e *Engine) snapshotView(ctx context.Context, tbl *table.Table, name string, snap int64) (string, error) {
	view := name + "@" + strconv.FormatInt(snap, 10)
	e.refreshMu.Lock()
	defer e.refreshMu.Unlock()
	if e.isClosed() {
		return "", errors.New("engine closed")
	}
	if e.hasHistory(view) {
		return view, nil
	}
	sc := tbl.Schema()
	var objs []cache.Object
	var body string
	var err error
	if snap == 0 {
		body, err = emptySelect(sc)
	} else {
		s := tbl.SnapshotByID(snap)
		if s.SchemaID != nil {
			for _, x := range tbl.Metadata().Schemas() {
				if x.ID == *s.SchemaID {
					sc = x
				}
			}
		}
		var mor *mergeOnRead
		objs, mor, err = e.fetchSnapshotAt(ctx, tbl, s)
		if err == nil {
			body, err = e.snapshotBody(ctx, sc, objs, mor)
		}
	}
	if err == nil {
		_, err = e.admin.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+historySchema+"; CREATE OR REPLACE VIEW "+historyName(view)+" AS "+body)
	}
	if err != nil {
		e.release(objs)
		return "", fmt.Errorf("building the view of %s at snapshot %d: %w", name, snap, err)
	}
	e.addHistory(ctx, historyView{name: view, objects: objs})
	return view, nil
}

// changesView returns the name of the view of the changes of tbl between snapshots
// from and to, creating it on first use.
func (e *Engine) changesView(ctx context.Context, tbl *table.Table, name string, from, to int64) (string, error) {
	a, err := e.snapshotView(ctx, tbl, name, from)
	if err != nil {
		return "", err
	}
	b, err := e.snapshotView(ctx, tbl, name, to)
	if err != nil {
		return "", err
	}
	view := fmt.Sprintf("table_changes(%s,%d,%d)", name, from, to)
	var keys []string
	if p := tbl.Properties()[PropKeys]; p != "" {
		keys = strings.Split(p, ",")
	} else {
		keys = []string{"_batch_id", "_row"}
	}
	for _, k := range keys {
		if _, ok := tbl.Schema().FindFieldByName(k); !ok {
			return "", &Error{Code: CodeUndefinedTable, Msg: fmt.Sprintf("table_changes on %s: the table has no key column %s", name, k)}
		}
	}
	var sel, on, proj []string
	for _, k := range keys {
		q := quoteIdent(k)
		sel = append(sel, q)
		on = append(on, "a."+q+" IS NOT DISTINCT FROM b."+q)
		proj = append(proj, "coalesce(b."+q+", a."+q+") AS "+q)
	}
	body := "SELECT CASE WHEN a.r IS NULL THEN 'insert' WHEN b.r IS NULL THEN 'delete' ELSE 'update' END AS op, " +
		strings.Join(proj, ", ") + ", a.r AS before, b.r AS after FROM (SELECT " + strings.Join(sel, ", ") + ", t AS r FROM " +
		historyName(a) + " AS t) AS a FULL JOIN (SELECT " + strings.Join(sel, ", ") + ", t AS r FROM " + historyName(b) +
		" AS t) AS b ON " + strings.Join(on, " AND ") + " WHERE a.r IS DISTINCT FROM b.r"
	e.refreshMu.Lock()
	defer e.refreshMu.Unlock()
	if e.hasHistory(view) {
		return view, nil
	}
	if _, err := e.admin.ExecContext(ctx, "CREATE OR REPLACE VIEW "+historyName(view)+" AS "+body); err != nil {
		return "", fmt.Errorf("building table_changes of %s: %w", name, err)
	}
	e.addHistory(ctx, historyView{name: view})
	return view, nil
}

func historyName(view string) string { return historySchema + "." + quoteIdent(view) }

// hasHistory and addHistory keep the history views, oldest first; refreshMu held.
func (e *Engine) hasHistory(name string) bool {
	for _, h := range e.history {
		if h.name == name {
			return true
		}
	}
	return false
}

func (e *Engine) addHistory(ctx context.Context, h historyView) {
	e.history = append(e.history, h)
	for len(e.history) > maxHistoryViews {
		old := e.history[0]
		e.history = e.history[1:]
		if _, err := e.admin.ExecContext(ctx, "DROP VIEW IF EXISTS "+historyName(old.name)); err != nil {
			e.logger.Warn("dropping a history view", "view", old.name, "err", err)
		}
		e.release(old.objects)
	}
}

// closeHistory releases the history views' objects; refreshMu held.
func (e *Engine) closeHistory() {
	for _, h := range e.history {
		e.release(h.objects)
	}
	e.history = nil
}

// withValues is ctx (its deadline and cancellation) also carrying the values of
// values, which ctx's own values override.
func withValues(ctx, values context.Context) context.Context {
	return valuesCtx{ctx, values}
}

type valuesCtx struct {
	context.Context
	values context.Context
}

func (c valuesCtx) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}
