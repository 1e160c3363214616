package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// Several percentiles of one value. DuckDB computes each percentile_cont or
// percentile_disc aggregate of a SELECT on its own, so a report asking for the median
// and the 90th percentile of the same expression gathers and orders every value
// twice. DuckDB's list form, quantile_cont(x, [p1, p2]), gathers them once and picks
// each fraction with the same code, so where a SELECT has two or more
// percentile_cont (or percentile_disc) aggregates WITHIN GROUP (ORDER BY x) of the same
// x, each becomes quantile_cont(x, [p1, ..., pn])[i], all with one identical list,
// which DuckDB's binder computes as one aggregate. The values are the same, bit for
// bit (TestQuantileMergeMatches). Only ascending orders, constant fractions and
// aggregates without FILTER or DISTINCT of values without volatile functions are
// merged; anything else is left as written.

// noLocation is DuckDB's query_location of an expression that has none in the text.
const noLocation = uint64(18446744073709551615)

// mergeQuantiles rewrites, in place, the percentile aggregates of every SELECT of
// tree that share their ordering, and reports whether it changed any.
func mergeQuantiles(ctx context.Context, q rowQueryer, tree map[string]any) (bool, error) {
	m := &quantileMerger{ctx: ctx, q: q}
	if err := m.walk(tree); err != nil {
		return false, err
	}
	return m.changed, nil
}

type quantileMerger struct {
	ctx     context.Context
	q       rowQueryer
	changed bool
}

func (m *quantileMerger) walk(v any) error {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			if err := m.walk(c); err != nil {
				return err
			}
		}
	case map[string]any:
		if x["type"] == "SELECT_NODE" {
			if err := m.selectNode(x); err != nil {
				return err
			}
		}
		for _, k := range sortedKeys(x) {
			if err := m.walk(x[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// quantileCall is one mergeable percentile aggregate.
type quantileCall struct {
	node     map[string]any
	name     string // quantile_cont or quantile_disc
	fraction map[string]any
	order    map[string]any // the ORDER BY expression
	key      string         // name and order expression, without query locations
}

// quantileOf returns x as a mergeable percentile aggregate.
func quantileOf(x map[string]any) (quantileCall, bool) {
	name, _ := x["function_name"].(string)
	if x["class"] != "FUNCTION" || (name != "quantile_cont" && name != "quantile_disc") ||
		x["filter"] != nil || x["distinct"] == true || x["export_state"] == true {
		return quantileCall{}, false
	}
	if s, _ := x["schema"].(string); s != "" && s != "main" {
		return quantileCall{}, false
	}
	if c, _ := x["catalog"].(string); c != "" && c != "system" {
		return quantileCall{}, false
	}
	args, _ := x["children"].([]any)
	if len(args) != 1 {
		return quantileCall{}, false
	}
	frac := asMap(args[0])
	if frac == nil || frac["class"] != "CONSTANT" || asMap(frac["value"])["is_null"] == true {
		return quantileCall{}, false
	}
	switch asMap(asMap(frac["value"])["type"])["id"] {
	case "DECIMAL", "DOUBLE", "FLOAT":
	default:
		return quantileCall{}, false
	}
	orders, _ := asMap(x["order_bys"])["orders"].([]any)
	if len(orders) != 1 {
		return quantileCall{}, false
	}
	o := asMap(orders[0])
	if t := o["type"]; t != "ORDER_DEFAULT" && t != "ASCENDING" {
		return quantileCall{}, false
	}
	expr := asMap(o["expression"])
	if expr == nil || callsVolatile(expr) {
		return quantileCall{}, false // each aggregate would draw its own values
	}
	key, err := json.Marshal(withoutLocations(expr))
	if err != nil {
		return quantileCall{}, false
	}
	return quantileCall{node: x, name: name, fraction: frac, order: expr, key: name + " " + string(key)}, true
}

// callsVolatile reports whether v calls a function that gives another value per call.
func callsVolatile(v any) bool {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			if callsVolatile(c) {
				return true
			}
		}
	case map[string]any:
		if n, _ := x["function_name"].(string); volatile[strings.ToLower(n)] {
			return true
		}
		for _, c := range x {
			if callsVolatile(c) {
				return true
			}
		}
	}
	return false
}

// withoutLocations copies v without its query_location fields, which differ between
// two occurrences of the same expression.
func withoutLocations(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, c := range x {
			out[i] = withoutLocations(c)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, c := range x {
			if k != "query_location" {
				out[k] = withoutLocations(c)
			}
		}
		return out
	}
	return v
}

// calls lists the mergeable aggregates of v outside nested SELECTs; at points to the
// slot holding each.
func (m *quantileMerger) calls(v any, out *[]quantileCall, at *[]func(any)) {
	switch x := v.(type) {
	case []any:
		for i, c := range x {
			if cm := asMap(c); cm != nil {
				if qc, ok := quantileOf(cm); ok {
					*out = append(*out, qc)
					*at = append(*at, func(r any) { x[i] = r })
					continue
				}
			}
			m.calls(c, out, at)
		}
	case map[string]any:
		if x["type"] == "SELECT_NODE" || x["class"] == "WINDOW" {
			return
		}
		for _, k := range sortedKeys(x) {
			if cm := asMap(x[k]); cm != nil {
				if qc, ok := quantileOf(cm); ok {
					*out = append(*out, qc)
					*at = append(*at, func(r any) { x[k] = r })
					continue
				}
			}
			m.calls(x[k], out, at)
		}
	}
}

func (m *quantileMerger) selectNode(node map[string]any) error {
	list, _ := node["select_list"].([]any)
	type found struct {
		calls []quantileCall
		at    []func(any)
		item  int // select-list index, -1 for HAVING
	}
	var all []found
	for i, item := range list {
		f := found{item: i}
		if qc, ok := quantileOf(asMap(item)); ok {
			f.calls, f.at = []quantileCall{qc}, []func(any){func(r any) { list[i] = r }}
		} else {
			m.calls(item, &f.calls, &f.at)
		}
		all = append(all, f)
	}
	h := found{item: -1}
	if qc, ok := quantileOf(asMap(node["having"])); ok {
		h.calls, h.at = []quantileCall{qc}, []func(any){func(r any) { node["having"] = r }}
	} else {
		m.calls(node["having"], &h.calls, &h.at)
	}
	all = append(all, h)

	byKey := map[string][]quantileCall{}
	for _, f := range all {
		for _, c := range f.calls {
			byKey[c.key] = append(byKey[c.key], c)
		}
	}
	merged := map[string]map[string]any{} // key -> the shared list aggregate
	for key, cs := range byKey {
		if len(cs) < 2 {
			continue
		}
		var fracs []any
		for _, c := range cs {
			fracs = append(fracs, deepCopy(c.fraction))
		}
		merged[key] = map[string]any{
			"class": "FUNCTION", "type": "FUNCTION", "alias": "", "query_location": noLocation, "function_name": cs[0].name, "schema": "",
			"children": []any{deepCopy(cs[0].order), map[string]any{
				"class": "FUNCTION", "type": "FUNCTION", "alias": "", "query_location": noLocation, "function_name": "list_value", "schema": "main",
				"children": fracs, "filter": nil, "order_bys": map[string]any{"type": "ORDER_MODIFIER", "orders": []any{}},
				"distinct": false, "is_operator": false, "export_state": false, "catalog": "",
			}},
			"filter": nil, "order_bys": map[string]any{"type": "ORDER_MODIFIER", "orders": []any{}},
			"distinct": false, "is_operator": false, "export_state": false, "catalog": "",
		}
	}
	if len(merged) == 0 {
		return nil
	}
	// Unaliased select-list items keep the names they had.
	var tmpl map[string]any
	for _, f := range all {
		if f.item < 0 {
			continue
		}
		item := asMap(list[f.item])
		hit := false
		for _, c := range f.calls {
			if merged[c.key] != nil {
				hit = true
			}
		}
		if a, _ := item["alias"].(string); a != "" || !hit {
			continue
		}
		if tmpl == nil {
			t, err := parse(m.ctx, m.q, "SELECT 1")
			if err != nil {
				return fmt.Errorf("naming a select-list expression: %w", err)
			}
			tmpl = t
		}
		name, err := exprName(m.ctx, m.q, tmpl, item)
		if err != nil {
			return fmt.Errorf("naming a select-list expression: %w", err)
		}
		item["alias"] = name
	}
	pos := map[string]int{}
	for _, f := range all {
		for i, c := range f.calls {
			agg := merged[c.key]
			if agg == nil {
				continue
			}
			pos[c.key]++
			f.at[i](map[string]any{
				"class": "OPERATOR", "type": "ARRAY_EXTRACT", "alias": c.node["alias"], "query_location": noLocation,
				"children": []any{deepCopy(agg), map[string]any{
					"class": "CONSTANT", "type": "VALUE_CONSTANT", "alias": "", "query_location": noLocation,
					"value": map[string]any{"type": map[string]any{"id": "INTEGER", "type_info": nil}, "is_null": false, "value": pos[c.key]},
				}},
			})
		}
	}
	m.changed = true
	return nil
}
