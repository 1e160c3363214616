package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// FuzzScope checks the scope rewriter's one promise: any statement either is refused or
// becomes SQL in which every lake table is read only through the principal's filter.
// The rewritten SQL is parsed again by DuckDB and checked on that tree, independently of
// the rewriter's own walk.
func FuzzScope(f *testing.F) {
	for _, s := range []string{
		`SELECT id FROM encounters`,
		`SELECT * FROM encounters e JOIN labs l ON l.ref = e.id WHERE e._tenant = 'globex' OR true`,
		`WITH x AS (SELECT * FROM encounters) SELECT * FROM x UNION ALL SELECT * FROM labs`,
		`SELECT (SELECT count(*) FROM labs), * FROM encounters, LATERAL (SELECT * FROM labs WHERE labs.ref = encounters.id)`,
		`SELECT * FROM main.encounters TABLESAMPLE 50% WHERE id IN (SELECT ref FROM memory.main.labs)`,
		`WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r, encounters`,
		`SELECT * FROM encounters PIVOT (count(*) FOR _tenant IN ('acme', 'globex'))`,
		`SELECT * FROM (SUMMARIZE encounters)`,
		`SELECT * FROM read_parquet('x')`,
		`SELECT * FROM "ENCOUNTERS" AS "labs"(a, b)`,
		`SELECT $1::int, encounters FROM encounters`,
	} {
		f.Add(s)
	}
	e := openTenantLake(f)
	ctx := context.Background()
	s, err := e.Session(ctx, acmeA1)
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	wantWhere := stripLocations(s.filter["where_clause"])
	tables := e.scopeTables()
	f.Fuzz(func(t *testing.T, q string) {
		tree, err := parse(ctx, s.conn, q)
		if err != nil {
			return
		}
		sc := &scoper{principal: s.principal, tables: tables, filter: s.filter}
		if _, err := sc.scope(tree); err != nil {
			return
		}
		out, err := deparse(ctx, s.conn, tree)
		if err != nil {
			return // not run: Prepare fails the same way
		}
		again, err := parse(ctx, s.conn, out)
		if err != nil {
			return // not run: the rewritten SQL would fail to prepare
		}
		if err := checkScoped(again, tables, wantWhere); err != nil {
			t.Fatalf("%q -> %q: %v", q, out, err)
		}
	})
}

// checkScoped returns an error unless every lake table in tree is the FROM of a SELECT *
// whose WHERE is exactly the principal's filter, wrapped as a subquery, no CTE is named
// like a lake table, and no refused function is called.
func checkScoped(tree map[string]any, tables map[string]tableScope, wantWhere any) error {
	var first error
	fatalf := func(format string, args ...any) {
		if first == nil {
			first = fmt.Errorf(format, args...)
		}
	}
	var walk func(v any, parents []any)
	walk = func(v any, parents []any) {
		switch x := v.(type) {
		case []any:
			for _, c := range x {
				walk(c, append(parents, x))
			}
		case map[string]any:
			if cm, ok := x["cte_map"].(map[string]any); ok {
				entries, _ := cm["map"].([]any)
				for _, en := range entries {
					if k, _ := en.(map[string]any)["key"].(string); tables[strings.ToLower(k)].name != "" {
						fatalf("CTE %s shadows a lake table", k)
					}
				}
			}
			if _, isExpr := x["class"]; !isExpr && x["type"] == "BASE_TABLE" {
				name, _ := x["table_name"].(string)
				if _, lake := tables[strings.ToLower(name)]; lake {
					if err := checkWrapped(x, parents, wantWhere); err != nil {
						fatalf("%v", err)
					}
				}
			}
			if isExprMap(x) {
				if name, _ := x["function_name"].(string); functionDenied(name) {
					fatalf("calls %s", name)
				}
			}
			if !isExprMap(x) && x["type"] == "TABLE_FUNCTION" {
				fn, _ := x["function"].(map[string]any)
				if name, _ := fn["function_name"].(string); !tableFunctions[strings.ToLower(name)] {
					fatalf("calls table function %s", name)
				}
			}
			for _, k := range sortedKeys(x) {
				walk(x[k], append(parents, x))
			}
		}
	}
	walk(tree, nil)
	return first
}

func isExprMap(x map[string]any) bool { _, ok := x["class"]; return ok }

func checkWrapped(base map[string]any, parents []any, wantWhere any) error {
	fail := func(why string) error {
		raw, _ := json.Marshal(base)
		return fmt.Errorf("lake table read unscoped (%s): %s", why, raw)
	}
	if len(parents) < 3 {
		return fail("no enclosing subquery")
	}
	sel, ok1 := parents[len(parents)-1].(map[string]any)
	wrap, ok2 := parents[len(parents)-2].(map[string]any)
	ref, ok3 := parents[len(parents)-3].(map[string]any)
	if !ok1 || !ok2 || !ok3 || sel["type"] != "SELECT_NODE" || !reflect.DeepEqual(sel["from_table"], any(base)) {
		return fail("not the FROM of a SELECT")
	}
	if ref["type"] != "SUBQUERY" || !reflect.DeepEqual(ref["subquery"], any(wrap)) || !reflect.DeepEqual(wrap["node"], any(sel)) {
		return fail("not a subquery")
	}
	if at, _ := base["at_clause"]; at != nil {
		return fail("time travel")
	}
	list, _ := sel["select_list"].([]any)
	if len(list) != 1 {
		return fail("select list is not *")
	}
	star, _ := list[0].(map[string]any)
	if star["class"] != "STAR" || len(star["exclude_list"].([]any)) > 0 || len(star["replace_list"].([]any)) > 0 || star["expr"] != nil || star["columns"] != false {
		return fail("select list is not a plain *")
	}
	for _, k := range []string{"group_expressions", "modifiers"} {
		if l, _ := sel[k].([]any); len(l) > 0 {
			return fail(k)
		}
	}
	if sel["having"] != nil || sel["qualify"] != nil || sel["sample"] != nil {
		return fail("having, qualify or sample inside the filter")
	}
	if !reflect.DeepEqual(stripLocations(sel["where_clause"]), wantWhere) {
		raw, _ := json.Marshal(sel["where_clause"])
		return fail("WHERE is not the principal's filter: " + string(raw))
	}
	return nil
}

// stripLocations returns a copy of an AST without query_location fields, which differ
// between parses of equal trees.
func stripLocations(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, c := range x {
			out[i] = stripLocations(c)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, c := range x {
			if k != "query_location" {
				out[k] = stripLocations(c)
			}
		}
		return out
	}
	return v
}

// TestCheckScopedCatches checks the fuzz target's oracle fails on unscoped trees, so a
// passing fuzz run means something.
func TestCheckScopedCatches(t *testing.T) {
	e := openTenantLake(t)
	ctx := context.Background()
	s, err := e.Session(ctx, acme)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := stripLocations(s.filter["where_clause"])
	for _, q := range []string{
		`SELECT * FROM encounters`,
		`SELECT * FROM (SELECT * FROM encounters WHERE _tenant = 'globex') encounters`,
		`SELECT * FROM (SELECT * FROM encounters WHERE _tenant = 'acme' OR true) encounters`,
		`SELECT * FROM read_parquet('x')`,
		`WITH labs AS (SELECT 1) SELECT 1`,
	} {
		tree, err := parse(ctx, s.conn, q)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkScoped(tree, e.scopeTables(), want); err == nil {
			t.Errorf("checkScoped accepted %s", q)
		}
	}
	// And accepts what the rewriter makes.
	st, err := s.Prepare(ctx, `SELECT * FROM encounters JOIN labs ON true`)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	scoped, _, err := s.scope(ctx, st.text)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := parse(ctx, s.conn, scoped)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkScoped(tree, e.scopeTables(), want); err != nil {
		t.Errorf("checkScoped refused the rewriter's %s: %v", scoped, err)
	}
}
