package engine

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/medlake/medlake/protocol/feed"
	"github.com/medlake/medlake/query/auth"
)

// Tenant isolation. A principal that is not an admin reads only the rows of its tenant
// (and of its granted facilities, when it has grants), whatever SQL it sends. The check
// runs on DuckDB's own parse tree, not on our reading of the text: json_serialize_sql
// gives the statement's AST as JSON; scope walks it, replaces every reference to a lake
// table by a subquery that filters the table to the principal's _tenant and _facility,
// refuses everything that could reach rows another way (file and metadata table
// functions, other databases and schemas, CTEs shadowing lake tables, time travel,
// statements other than SELECT), and json_deserialize_sql turns the tree back into the
// SQL that is prepared. Names the walker does not know are refused, so an unknown node
// type in a later DuckDB fails closed.

// Error is an error for the client with its SQLSTATE.
type Error struct {
	Code string // SQLSTATE
	Msg  string
	Err  error // the underlying error, if any
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// SQLState returns the SQLSTATE to send to the client.
func (e *Error) SQLState() string { return e.Code }

// SQLSTATEs of scope errors.
const (
	CodeInsufficientPrivilege = "42501"
	CodeQueryCanceled         = "57014"
	CodeTooManyConnections    = "53300"
	CodeOutOfMemory           = "53200"
	CodeUndefinedTable        = "42P01"
)

func denied(format string, args ...any) error {
	return &Error{Code: CodeInsufficientPrivilege, Msg: "permission denied: " + fmt.Sprintf(format, args...)}
}

// tableScope is what the scope needs to know of a lake table.
type tableScope struct {
	name        string // as the view is named
	hasTenant   bool   // has a _tenant column
	hasFacility bool   // has a _facility column
}

// Columns the filter reads: the lineage the hub writes on every row.
const (
	tenantColumn   = feed.ColTenant
	facilityColumn = feed.ColFacility
)

// tableFunctions are the table functions a tenant user may call: they generate values
// and read nothing. Every other one (read_parquet, read_csv, glob, query, query_table,
// parquet_metadata, duckdb_*, pragma_*, json_execute_serialized_sql, ...) is refused.
var tableFunctions = map[string]bool{
	"range": true, "generate_series": true, "unnest": true, "json_each": true, "json_tree": true,
}

// deniedFunctionPrefixes and deniedFunctions name scalar functions a tenant user may not
// call: they read files or reveal the engine's metadata (view definitions hold the
// cached file paths) or settings.
var (
	deniedFunctionPrefixes = []string{"duckdb_", "pragma_", "read_", "parquet_", "iceberg_", "delta_", "glob"}
	deniedFunctions        = map[string]bool{
		"query": true, "query_table": true, "json_execute_serialized_sql": true, "sniff_csv": true,
		"pg_get_viewdef": true, "current_setting": true, "getvariable": true, "getenv": true,
		"which_secret": true, "sql_auto_complete": true,
	}
)

// metadataRelations are the catalog views a tenant user may read: they describe table
// and column names, which every tenant shares, and nothing of the rows. Those holding
// view definitions (information_schema.views, pg_views) or settings are left out.
var metadataRelations = map[string]map[string]bool{
	"information_schema": {"tables": true, "columns": true, "schemata": true, "table_constraints": true,
		"key_column_usage": true, "referential_constraints": true, "constraint_column_usage": true, "character_sets": true},
	"pg_catalog": {"pg_class": true, "pg_namespace": true, "pg_attribute": true, "pg_type": true, "pg_attrdef": true,
		"pg_index": true, "pg_indexes": true, "pg_constraint": true, "pg_description": true, "pg_database": true,
		"pg_tables": true, "pg_proc": true, "pg_am": true, "pg_enum": true, "pg_tablespace": true, "pg_roles": true,
		"pg_depend": true, "pg_sequence": true, "pg_sequences": true},
}

// tableRefTypes are the FROM-clause node types of DuckDB's serialized AST.
var tableRefTypes = map[string]bool{
	"BASE_TABLE": true, "JOIN": true, "SUBQUERY": true, "TABLE_FUNCTION": true, "EXPRESSION_LIST": true,
	"EMPTY": true, "EMPTY_FROM": true, "PIVOT": true, "SHOW_REF": true, "COLUMN_DATA": true, "DELIM_GET": true,
}

// queryNodeTypes are the query node types the walker knows.
var queryNodeTypes = map[string]bool{
	"SELECT_NODE": true, "SET_OPERATION_NODE": true, "RECURSIVE_CTE_NODE": true, "CTE_NODE": true,
}

// scoper rewrites one parsed statement for one principal.
type scoper struct {
	principal auth.Principal
	tables    map[string]tableScope // lake tables by lower-cased name
	filter    map[string]any        // the scoping SELECT node; nil for an admin
	ctes      map[string]bool       // WITH names anywhere in the statement, lower-cased
	touched   map[string]bool       // lake tables referenced
	// metaSchemas are Config.MetadataSchemas, lower-cased.
	metaSchemas map[string]bool
	// history resolves an admin's time travel and table_changes (history.go); nil
	// refuses them.
	history *historyResolver
}

func decodeTree(raw []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber() // query_location is a uint64 that float64 would round
	var tree map[string]any
	if err := d.Decode(&tree); err != nil {
		return nil, fmt.Errorf("decoding parser output: %w", err)
	}
	return tree, nil
}

type rowQueryer interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// parse returns DuckDB's parse tree of query, or the statement's refusal: a syntax
// error, or ErrNotReadOnly for anything but exactly one SELECT (json_serialize_sql
// serializes only SELECT statements).
func parse(ctx context.Context, q rowQueryer, query string) (map[string]any, error) {
	var raw string
	if err := q.QueryRowContext(ctx, "SELECT CAST(json_serialize_sql(CAST($1 AS VARCHAR)) AS VARCHAR)", query).Scan(&raw); err != nil {
		return nil, fmt.Errorf("checking statement: %w", err)
	}
	tree, err := decodeTree([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("checking statement: %w", err)
	}
	if e, _ := tree["error"].(bool); e {
		if t, _ := tree["error_type"].(string); t == "not implemented" {
			return nil, ErrNotReadOnly
		}
		msg, _ := tree["error_message"].(string)
		return nil, &SyntaxError{Msg: msg}
	}
	stmts, _ := tree["statements"].([]any)
	if len(stmts) != 1 {
		return nil, fmt.Errorf("%w (got %d statements)", ErrNotReadOnly, len(stmts))
	}
	return tree, nil
}

// deparse turns a parse tree back into SQL.
func deparse(ctx context.Context, q rowQueryer, tree map[string]any) (string, error) {
	raw, err := json.Marshal(tree)
	if err != nil {
		return "", fmt.Errorf("encoding scoped statement: %w", err)
	}
	var out string
	if err := q.QueryRowContext(ctx, "SELECT json_deserialize_sql(json($1))", string(raw)).Scan(&out); err != nil {
		return "", fmt.Errorf("writing scoped statement: %w", err)
	}
	return out, nil
}

// filterTemplate builds the SELECT node every lake table reference becomes for p:
// SELECT * FROM <table> WHERE _tenant = '<tenant>' [AND _facility IN (...)]. It is made
// by DuckDB's parser from text, so its shape is always what the deserializer expects.
func filterTemplate(ctx context.Context, q rowQueryer, p auth.Principal) (map[string]any, error) {
	if p.Tenant == "" {
		return nil, denied("user %s belongs to no tenant", p.User)
	}
	text := "SELECT * FROM " + quoteIdent(scopePlaceholder) + " WHERE " + quoteIdent(tenantColumn) + " = " + quoteString(p.Tenant)
	if len(p.Facilities) > 0 {
		lits := make([]string, len(p.Facilities))
		for i, f := range p.Facilities {
			lits[i] = quoteString(f)
		}
		text += " AND " + quoteIdent(facilityColumn) + " IN (" + strings.Join(lits, ", ") + ")"
	}
	tree, err := parse(ctx, q, text)
	if err != nil {
		return nil, fmt.Errorf("building the scope filter: %w", err)
	}
	stmt := tree["statements"].([]any)[0].(map[string]any)
	node, ok := stmt["node"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("building the scope filter: no query node")
	}
	return node, nil
}

// scopePlaceholder is the table name in the filter template, replaced per reference.
const scopePlaceholder = "medlake_scope_table"

// scope checks (and for a tenant user rewrites) tree in place and returns the lake
// tables it references.
func (s *scoper) scope(tree map[string]any) ([]string, error) {
	s.ctes, s.touched = map[string]bool{}, map[string]bool{}
	collectCTEs(tree, s.ctes)
	if s.filter != nil {
		for name := range s.ctes {
			if _, ok := s.tables[name]; ok {
				return nil, denied("a WITH query named %s would shadow the lake table of that name", name)
			}
		}
	}
	stmts := tree["statements"].([]any)
	out, err := s.walk(stmts[0])
	if err != nil {
		return nil, err
	}
	stmts[0] = out
	touched := make([]string, 0, len(s.touched))
	for t := range s.touched {
		touched = append(touched, t)
	}
	sort.Strings(touched)
	return touched, nil
}

func collectCTEs(v any, into map[string]bool) {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			collectCTEs(c, into)
		}
	case map[string]any:
		if cm, ok := x["cte_map"].(map[string]any); ok {
			entries, _ := cm["map"].([]any)
			for _, e := range entries {
				if em, ok := e.(map[string]any); ok {
					if k, ok := em["key"].(string); ok {
						into[strings.ToLower(k)] = true
					}
				}
			}
		}
		// CTE and recursive CTE nodes name their CTE themselves.
		if k, ok := x["ctename"].(string); ok {
			into[strings.ToLower(k)] = true
		}
		for _, c := range x {
			collectCTEs(c, into)
		}
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (s *scoper) walk(v any) (any, error) {
	switch x := v.(type) {
	case []any:
		for i, c := range x {
			out, err := s.walk(c)
			if err != nil {
				return nil, err
			}
			x[i] = out
		}
		return x, nil
	case map[string]any:
		return s.walkMap(x)
	}
	return v, nil
}

func (s *scoper) walkMap(x map[string]any) (any, error) {
	typ, _ := x["type"].(string)
	if _, isExpr := x["class"]; isExpr {
		if err := s.checkExpression(x); err != nil {
			return nil, err
		}
	} else if tableRefTypes[typ] {
		return s.tableRef(x, typ)
	} else if strings.HasSuffix(typ, "_NODE") && !queryNodeTypes[typ] && s.filter != nil {
		return nil, denied("query node %s is not supported", typ)
	} else if _, ok := x["table_name"]; ok && s.filter != nil {
		return nil, denied("table reference of kind %q is not supported", typ)
	}
	return s.walkChildren(x)
}

func (s *scoper) walkChildren(x map[string]any) (any, error) {
	for _, k := range sortedKeys(x) {
		out, err := s.walk(x[k])
		if err != nil {
			return nil, err
		}
		x[k] = out
	}
	return x, nil
}

func (s *scoper) checkExpression(x map[string]any) error {
	if s.filter == nil {
		return nil
	}
	// FUNCTION, WINDOW and any other class that calls a function by name.
	name, ok := x["function_name"].(string)
	if !ok {
		return nil
	}
	if schema, _ := x["schema"].(string); s.metaSchemas[strings.ToLower(schema)] {
		return nil
	}
	if functionDenied(name) {
		return denied("function %s reads files or engine metadata", name)
	}
	return nil
}

func functionDenied(name string) bool {
	name = strings.ToLower(name)
	if deniedFunctions[name] {
		return true
	}
	for _, p := range deniedFunctionPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func (s *scoper) tableRef(x map[string]any, typ string) (any, error) {
	switch typ {
	case "BASE_TABLE":
		return s.baseTable(x)
	case "TABLE_FUNCTION":
		fn, _ := x["function"].(map[string]any)
		if name, _ := fn["function_name"].(string); strings.EqualFold(name, "table_changes") {
			if s.filter != nil || s.history == nil {
				return nil, denied("table_changes reads a table's history, which only admins may")
			}
			out, table, err := s.history.changes(x)
			if err == nil {
				s.touched[table] = true
			}
			return out, err
		}
		if s.filter != nil {
			fn, _ := x["function"].(map[string]any)
			name, _ := fn["function_name"].(string)
			if !tableFunctions[strings.ToLower(name)] {
				return nil, denied("table function %s reads files or engine metadata", name)
			}
		}
	case "SHOW_REF":
		// DESCRIBE and SUMMARIZE of a query: the query inside is scoped like any.
		if name, _ := x["table_name"].(string); name != "" && s.filter != nil {
			return nil, denied("SHOW %s is not supported", name)
		}
	case "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY", "EMPTY_FROM", "PIVOT":
	default:
		if s.filter != nil {
			return nil, denied("table reference of kind %s is not supported", typ)
		}
	}
	return s.walkChildren(x)
}

func (s *scoper) baseTable(x map[string]any) (any, error) {
	name, _ := x["table_name"].(string)
	schema, _ := x["schema_name"].(string)
	catalog, _ := x["catalog_name"].(string)
	lname, lschema, lcatalog := strings.ToLower(name), strings.ToLower(schema), strings.ToLower(catalog)
	if lcatalog == "" || lcatalog == "memory" {
		if lschema == "" || lschema == "main" {
			if t, ok := s.tables[lname]; ok {
				if lschema == "" && lcatalog == "" && s.ctes[lname] {
					return x, nil // admin's CTE named like a table (refused for tenant users)
				}
				return s.lakeTable(x, t)
			}
			if lschema == "" && lcatalog == "" && s.ctes[lname] {
				return x, nil
			}
		}
	}
	if s.filter == nil {
		return x, nil
	}
	if s.metaSchemas[lschema] && (lcatalog == "" || lcatalog == "memory") {
		return x, nil
	}
	if rels, ok := metadataRelations[lschema]; ok && (lcatalog == "" || lcatalog == "memory" || lcatalog == "system") {
		if rels[lname] {
			return x, nil
		}
		return nil, denied("%s.%s is not readable", schema, name)
	}
	if lschema == "" && lcatalog == "" && metadataRelations["pg_catalog"][lname] {
		return x, nil
	}
	qualified := strings.Join(slices.DeleteFunc([]string{catalog, schema, name}, func(s string) bool { return s == "" }), ".")
	switch {
	case strings.HasPrefix(lname, "duckdb_") || strings.HasPrefix(lname, "sqlite_") || strings.HasPrefix(lname, "pragma_"):
		return nil, denied("%s describes the engine (view definitions hold file paths) and is not readable", qualified)
	case strings.ContainsAny(name, "/\\:*?") || strings.Contains(lname, ".parquet") || strings.Contains(lname, ".csv") || strings.Contains(lname, ".json"):
		return nil, denied("reading the file %q is not permitted", name)
	case lschema != "" && lschema != "main" || lcatalog != "" && lcatalog != "memory":
		return nil, denied("%s is outside the lake's tables (other databases and schemas are not readable)", qualified)
	}
	return nil, &Error{Code: CodeUndefinedTable, Msg: fmt.Sprintf("relation %q does not exist", qualified)}
}

// lakeTable replaces a reference to a lake table by the filtered subquery, keeping its
// alias (or its name as the alias, so qualified column references still bind), column
// aliases and sample.
func (s *scoper) lakeTable(x map[string]any, t tableScope) (any, error) {
	s.touched[t.name] = true
	if at, ok := x["at_clause"]; ok && at != nil {
		if s.filter == nil && s.history != nil {
			return s.history.at(x, t)
		}
		return nil, denied("time travel (AT) on %s is not permitted", t.name)
	}
	if s.filter == nil {
		return x, nil
	}
	if !t.hasTenant {
		return nil, denied("table %s has no %s column, so only admins may read it", t.name, tenantColumn)
	}
	if len(s.principal.Facilities) > 0 && !t.hasFacility {
		return nil, denied("table %s has no %s column, so a user with facility grants may not read it", t.name, facilityColumn)
	}
	node := deepCopy(s.filter).(map[string]any)
	from, ok := node["from_table"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("scope filter has no FROM")
	}
	from["table_name"] = t.name
	alias, _ := x["alias"].(string)
	if alias == "" {
		alias, _ = x["table_name"].(string)
	}
	colAliases, ok := x["column_name_alias"]
	if !ok || colAliases == nil {
		colAliases = []any{}
	}
	return map[string]any{
		"type":              "SUBQUERY",
		"alias":             alias,
		"sample":            x["sample"],
		"query_location":    x["query_location"],
		"subquery":          map[string]any{"node": node, "named_param_map": []any{}},
		"column_name_alias": colAliases,
	}, nil
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, c := range x {
			out[i] = deepCopy(c)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, c := range x {
			out[k] = deepCopy(c)
		}
		return out
	}
	return v
}
