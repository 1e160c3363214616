package pgwire

import (
	_ "embed" // catalog.sql
	"fmt"
	"sort"
	"strings"

	"github.com/medlake/medlake/query/engine"
)

// The PostgreSQL catalog emulation: DuckDB objects in schema medlake_pg
// (catalog.sql plus the definitions below) and a rewrite of client SQL that
// points pg_catalog references at them (rewriteSQL).

//go:embed catalog.sql
var catalogSQL string

// catalogSchema holds the emulation.
const catalogSchema = "medlake_pg"

// CatalogSchema is the schema CatalogSetup creates: views and macros over
// table and column names only, which tenant users may read
// (engine.Config.MetadataSchemas).
const CatalogSchema = catalogSchema

// emptyCatalogTables are pg_catalog tables clients read that have no rows
// here (no indexes, constraints, triggers, policies, publications…), with
// their columns and DuckDB types.
var emptyCatalogTables = map[string]string{
	"pg_index": "indexrelid BIGINT, indrelid BIGINT, indnatts SMALLINT, indnkeyatts SMALLINT, indisunique BOOLEAN, " +
		"indnullsnotdistinct BOOLEAN, indisprimary BOOLEAN, indisexclusion BOOLEAN, indimmediate BOOLEAN, " +
		"indisclustered BOOLEAN, indisvalid BOOLEAN, indcheckxmin BOOLEAN, indisready BOOLEAN, indislive BOOLEAN, " +
		"indisreplident BOOLEAN, indkey SMALLINT[], indcollation BIGINT[], indclass BIGINT[], indoption SMALLINT[], " +
		"indexprs VARCHAR, indpred VARCHAR",
	"pg_constraint": "oid BIGINT, conname VARCHAR, connamespace BIGINT, contype VARCHAR, condeferrable BOOLEAN, " +
		"condeferred BOOLEAN, convalidated BOOLEAN, conrelid BIGINT, contypid BIGINT, conindid BIGINT, " +
		"conparentid BIGINT, confrelid BIGINT, confupdtype VARCHAR, confdeltype VARCHAR, confmatchtype VARCHAR, " +
		"conislocal BOOLEAN, coninhcount INTEGER, connoinherit BOOLEAN, conkey SMALLINT[], confkey SMALLINT[], " +
		"conpfeqop BIGINT[], conppeqop BIGINT[], conffeqop BIGINT[], confdelsetcols SMALLINT[], conexclop BIGINT[], conbin VARCHAR",
	"pg_auth_members": "oid BIGINT, roleid BIGINT, member BIGINT, grantor BIGINT, admin_option BOOLEAN",
	"pg_inherits":     "inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, inhdetachpending BOOLEAN",
	"pg_trigger": "oid BIGINT, tgrelid BIGINT, tgparentid BIGINT, tgname VARCHAR, tgfoid BIGINT, tgtype SMALLINT, " +
		"tgenabled VARCHAR, tgisinternal BOOLEAN, tgconstrrelid BIGINT, tgconstrindid BIGINT, tgconstraint BIGINT, " +
		"tgdeferrable BOOLEAN, tginitdeferred BOOLEAN, tgnargs SMALLINT, tgattr SMALLINT[], tgargs BLOB, tgqual VARCHAR, " +
		"tgoldtable VARCHAR, tgnewtable VARCHAR",
	"pg_policy": "oid BIGINT, polname VARCHAR, polrelid BIGINT, polcmd VARCHAR, polpermissive BOOLEAN, " +
		"polroles BIGINT[], polqual VARCHAR, polwithcheck VARCHAR",
	"pg_rewrite": "oid BIGINT, rulename VARCHAR, ev_class BIGINT, ev_type VARCHAR, ev_enabled VARCHAR, " +
		"is_instead BOOLEAN, ev_qual VARCHAR, ev_action VARCHAR",
	"pg_statistic_ext": "oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, stxowner BIGINT, " +
		"stxstattarget INTEGER, stxkeys SMALLINT[], stxkind VARCHAR[], stxexprs VARCHAR",
	"pg_publication": "oid BIGINT, pubname VARCHAR, pubowner BIGINT, puballtables BOOLEAN, pubinsert BOOLEAN, " +
		"pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, pubviaroot BOOLEAN",
	"pg_publication_rel":       "oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, prattrs SMALLINT[]",
	"pg_publication_namespace": "oid BIGINT, pnpubid BIGINT, pnnspid BIGINT",
	"pg_attrdef":               "oid BIGINT, adrelid BIGINT, adnum SMALLINT, adbin VARCHAR",
	"pg_description":           "objoid BIGINT, classoid BIGINT, objsubid INTEGER, description VARCHAR",
	"pg_shdescription":         "objoid BIGINT, classoid BIGINT, description VARCHAR",
	"pg_foreign_table":         "ftrelid BIGINT, ftserver BIGINT, ftoptions VARCHAR[]",
	"pg_partitioned_table": "partrelid BIGINT, partstrat VARCHAR, partnatts SMALLINT, partdefid BIGINT, " +
		"partattrs SMALLINT[], partclass BIGINT[], partcollation BIGINT[], partexprs VARCHAR",
	"pg_proc": "oid BIGINT, proname VARCHAR, pronamespace BIGINT, proowner BIGINT, prolang BIGINT, prokind VARCHAR, " +
		"proretset BOOLEAN, prorettype BIGINT, proargtypes VARCHAR, proallargtypes BIGINT[], proargmodes VARCHAR[], " +
		"proargnames VARCHAR[], prosrc VARCHAR, proacl VARCHAR[]",
	"pg_extension": "oid BIGINT, extname VARCHAR, extowner BIGINT, extnamespace BIGINT, extrelocatable BOOLEAN, " +
		"extversion VARCHAR, extconfig BIGINT[], extcondition VARCHAR[]",
	"pg_enum":                 "oid BIGINT, enumtypid BIGINT, enumsortorder REAL, enumlabel VARCHAR",
	"pg_range":                "rngtypid BIGINT, rngsubtype BIGINT, rngmultitypid BIGINT, rngcollation BIGINT, rngsubopc BIGINT",
	"pg_depend":               "classid BIGINT, objid BIGINT, objsubid INTEGER, refclassid BIGINT, refobjid BIGINT, refobjsubid INTEGER, deptype VARCHAR",
	"pg_sequence":             "seqrelid BIGINT, seqtypid BIGINT, seqstart BIGINT, seqincrement BIGINT, seqmax BIGINT, seqmin BIGINT, seqcache BIGINT, seqcycle BOOLEAN",
	"pg_matviews":             "schemaname VARCHAR, matviewname VARCHAR, matviewowner VARCHAR, tablespace VARCHAR, hasindexes BOOLEAN, ispopulated BOOLEAN, definition VARCHAR",
	"pg_indexes":              "schemaname VARCHAR, tablename VARCHAR, indexname VARCHAR, tablespace VARCHAR, indexdef VARCHAR",
	"pg_event_trigger":        "oid BIGINT, evtname VARCHAR, evtevent VARCHAR, evtowner BIGINT, evtfoid BIGINT, evtenabled VARCHAR, evttags VARCHAR[]",
	"pg_foreign_server":       "oid BIGINT, srvname VARCHAR, srvowner BIGINT, srvfdw BIGINT, srvtype VARCHAR, srvversion VARCHAR, srvacl VARCHAR[], srvoptions VARCHAR[]",
	"pg_foreign_data_wrapper": "oid BIGINT, fdwname VARCHAR, fdwowner BIGINT, fdwhandler BIGINT, fdwvalidator BIGINT, fdwacl VARCHAR[], fdwoptions VARCHAR[]",
	"pg_cast":                 "oid BIGINT, castsource BIGINT, casttarget BIGINT, castfunc BIGINT, castcontext VARCHAR, castmethod VARCHAR",
	"pg_operator":             "oid BIGINT, oprname VARCHAR, oprnamespace BIGINT, oprowner BIGINT, oprkind VARCHAR, oprleft BIGINT, oprright BIGINT, oprresult BIGINT, oprcode VARCHAR",
	"pg_language":             "oid BIGINT, lanname VARCHAR, lanowner BIGINT, lanispl BOOLEAN, lanpltrusted BOOLEAN",
}

// catalogRelations and catalogFunctions are the names rewriteSQL sends to
// medlake_pg: relations defined in catalog.sql or emptyCatalogTables, and
// functions (macros) defined there.
var catalogRelations = func() map[string]bool {
	m := setOf("pg_type", "pg_namespace", "pg_class", "pg_attribute", "pg_database", "pg_am",
		"pg_roles", "pg_user", "pg_tablespace", "pg_collation", "pg_tables", "pg_views", "pg_settings")
	for name := range emptyCatalogTables {
		m[name] = true
	}
	return m
}()

var catalogFunctions = setOf("format_type", "pg_get_userbyid", "pg_table_is_visible", "pg_type_is_visible",
	"pg_get_expr", "col_description", "obj_description", "shobj_description", "pg_encoding_to_char",
	"pg_get_indexdef", "pg_get_constraintdef", "pg_get_partkeydef", "pg_get_viewdef", "pg_relation_size",
	"pg_total_relation_size", "pg_table_size", "pg_indexes_size", "pg_is_in_recovery", "txid_current",
	"current_database", "current_schema", "current_schemas", "array_upper", "array_lower", "quote_ident",
	"to_regclass", "to_regtype", "set_config", "version", "current_setting", "pg_get_statisticsobjdef_columns",
	"pg_get_serial_sequence", "pg_get_triggerdef", "pg_get_ruledef", "pg_get_function_arguments",
	"pg_get_function_identity_arguments", "pg_get_function_result", "pg_relation_is_publishable", "current_user", "pg_get_keywords")

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// CatalogSetup returns the statements that create the catalog emulation in
// a DuckDB database; give them to the engine (engine.Config.Setup) that the
// server serves.
func CatalogSetup() []string {
	stmts := engine.SplitStatements(catalogSQL)
	names := make([]string, 0, len(emptyCatalogTables))
	for n := range emptyCatalogTables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var cols []string
		for _, col := range strings.Split(emptyCatalogTables[n], ", ") {
			name, typ, _ := strings.Cut(col, " ")
			cols = append(cols, fmt.Sprintf("CAST(NULL AS %s) AS %s", typ, name))
		}
		stmts = append(stmts, fmt.Sprintf("CREATE VIEW %s.%s AS SELECT %s WHERE false", catalogSchema, n, strings.Join(cols, ", ")))
	}
	// version() and current_setting() answer as the server does.
	stmts = append(stmts, fmt.Sprintf("CREATE MACRO %s.version() AS %s", catalogSchema, quoteLiteral(versionString)))
	keys := make([]string, 0, len(showValues))
	for k := range showValues {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var cases strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&cases, " WHEN %s THEN %s", quoteLiteral(k), quoteLiteral(showValues[k]))
	}
	body := fmt.Sprintf("CASE lower(name)%s ELSE CAST(NULL AS VARCHAR) END", cases.String())
	// pg_settings lists the same values.
	rows := make([]string, len(keys))
	for i, k := range keys {
		rows[i] = fmt.Sprintf("(%s, %s)", quoteLiteral(k), quoteLiteral(showValues[k]))
	}
	stmts = append(stmts, fmt.Sprintf("CREATE VIEW %s.pg_settings AS SELECT name, setting, CAST(NULL AS VARCHAR) AS unit, "+
		"'' AS category, '' AS short_desc, CAST(NULL AS VARCHAR) AS extra_desc, 'user' AS context, 'string' AS vartype, "+
		"'default' AS source FROM (VALUES %s) t(name, setting)", catalogSchema, strings.Join(rows, ", ")))
	stmts = append(stmts, fmt.Sprintf("CREATE MACRO %s.current_setting(name) AS %s, (name, missing_ok) AS %s, "+
		"(name, missing_ok, session_value) AS session_value", catalogSchema, body, body))
	return stmts
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
