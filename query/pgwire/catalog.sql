-- PostgreSQL catalog emulation for DuckDB, in schema medlake_pg.
--
-- Clients (psql, psqlODBC, pgJDBC, BI tools) browse a server through
-- pg_catalog. DuckDB has a pg_catalog of its own, but it shows the lake
-- tables as views in schema "main" and lacks functions psql calls. The
-- server rewrites references to the objects defined here (pg_catalog.X and
-- unqualified X) to medlake_pg.X. Lake tables appear as ordinary tables
-- (relkind 'r') in schema "public". Only metadata is exposed: names and
-- types of the tables' columns, never rows.

CREATE SCHEMA medlake_pg;

-- Types: the OIDs pgwire reports for DuckDB types (types.go, pgTypeOf).
CREATE MACRO medlake_pg.type_oid(t) AS CAST(CASE
    WHEN t = 'BOOLEAN' THEN 16
    WHEN t IN ('TINYINT', 'SMALLINT', 'UTINYINT') THEN 21
    WHEN t IN ('INTEGER', 'USMALLINT') THEN 23
    WHEN t IN ('BIGINT', 'UINTEGER') THEN 20
    WHEN t IN ('UBIGINT', 'HUGEINT', 'UHUGEINT') OR t LIKE 'DECIMAL%' THEN 1700
    WHEN t = 'FLOAT' THEN 700
    WHEN t = 'DOUBLE' THEN 701
    WHEN t = 'DATE' THEN 1082
    WHEN t = 'TIME' THEN 1083
    WHEN t IN ('TIMESTAMP', 'TIMESTAMP_S', 'TIMESTAMP_MS', 'TIMESTAMP_NS') THEN 1114
    WHEN t = 'TIMESTAMP WITH TIME ZONE' THEN 1184
    WHEN t = 'INTERVAL' THEN 1186
    WHEN t = 'BLOB' THEN 17
    WHEN t = 'UUID' THEN 2950
    ELSE 25 END AS BIGINT);

-- atttypmod of a numeric(p,s) column: ((p << 16) | s) + 4; -1 otherwise.
CREATE MACRO medlake_pg.type_mod(t, p, s) AS CAST(CASE
    WHEN t LIKE 'DECIMAL%' THEN (p * 65536 + s) + 4
    ELSE -1 END AS INTEGER);

CREATE VIEW medlake_pg.pg_type AS
SELECT CAST(oid AS BIGINT) AS oid, typname, CAST(11 AS BIGINT) AS typnamespace, CAST(10 AS BIGINT) AS typowner,
       CAST(typlen AS SMALLINT) AS typlen, typbyval, 'b' AS typtype, typcategory, false AS typispreferred,
       true AS typisdefined, ',' AS typdelim, CAST(0 AS BIGINT) AS typrelid, '-' AS typsubscript,
       CAST(0 AS BIGINT) AS typelem, CAST(typarray AS BIGINT) AS typarray,
       typname || 'in' AS typinput, typname || 'out' AS typoutput, typname || 'recv' AS typreceive,
       typname || 'send' AS typsend, '-' AS typmodin, '-' AS typmodout, '-' AS typanalyze,
       typalign, 'p' AS typstorage, false AS typnotnull, CAST(0 AS BIGINT) AS typbasetype,
       CAST(-1 AS INTEGER) AS typtypmod, 0 AS typndims,
       CAST(CASE WHEN typcategory = 'S' THEN 100 ELSE 0 END AS BIGINT) AS typcollation,
       CAST(NULL AS VARCHAR) AS typdefaultbin, CAST(NULL AS VARCHAR) AS typdefault,
       CAST(NULL AS VARCHAR[]) AS typacl
FROM (VALUES
    (16, 'bool', 1, true, 'B', 1000, 'c'),
    (17, 'bytea', -1, false, 'U', 1001, 'i'),
    (18, 'char', 1, true, 'S', 1002, 'c'),
    (19, 'name', 64, false, 'S', 1003, 'c'),
    (20, 'int8', 8, true, 'N', 1016, 'd'),
    (21, 'int2', 2, true, 'N', 1005, 's'),
    (23, 'int4', 4, true, 'N', 1007, 'i'),
    (25, 'text', -1, false, 'S', 1009, 'i'),
    (26, 'oid', 4, true, 'N', 1028, 'i'),
    (700, 'float4', 4, true, 'N', 1021, 'i'),
    (701, 'float8', 8, true, 'N', 1022, 'd'),
    (1043, 'varchar', -1, false, 'S', 1015, 'i'),
    (1082, 'date', 4, true, 'D', 1182, 'i'),
    (1083, 'time', 8, true, 'D', 1183, 'd'),
    (1114, 'timestamp', 8, true, 'D', 1115, 'd'),
    (1184, 'timestamptz', 8, true, 'D', 1185, 'd'),
    (1186, 'interval', 16, false, 'T', 1187, 'd'),
    (1700, 'numeric', -1, false, 'N', 1231, 'i'),
    (2950, 'uuid', 16, false, 'U', 2951, 'c')
) t(oid, typname, typlen, typbyval, typcategory, typarray, typalign);

CREATE MACRO medlake_pg.format_type(oid, mod) AS CASE CAST(oid AS BIGINT)
    WHEN 16 THEN 'boolean' WHEN 17 THEN 'bytea' WHEN 18 THEN '"char"' WHEN 19 THEN 'name'
    WHEN 20 THEN 'bigint' WHEN 21 THEN 'smallint' WHEN 23 THEN 'integer' WHEN 25 THEN 'text'
    WHEN 26 THEN 'oid' WHEN 700 THEN 'real' WHEN 701 THEN 'double precision'
    WHEN 1043 THEN 'character varying' WHEN 1082 THEN 'date'
    WHEN 1083 THEN 'time without time zone' WHEN 1114 THEN 'timestamp without time zone'
    WHEN 1184 THEN 'timestamp with time zone' WHEN 1186 THEN 'interval'
    WHEN 1700 THEN CASE WHEN mod IS NOT NULL AND mod >= 4
        THEN 'numeric(' || ((mod - 4) // 65536) || ',' || ((mod - 4) % 65536) || ')' ELSE 'numeric' END
    WHEN 2950 THEN 'uuid'
    ELSE '???' END;

CREATE VIEW medlake_pg.pg_namespace AS
SELECT CAST(oid AS BIGINT) AS oid, nspname, CAST(10 AS BIGINT) AS nspowner, CAST(NULL AS VARCHAR[]) AS nspacl
FROM (VALUES (11, 'pg_catalog'), (2200, 'public'), (13000, 'information_schema')) t(oid, nspname);

-- Lake tables are DuckDB views in schema main; they are shown as tables in public.
CREATE VIEW medlake_pg.pg_class AS
SELECT CAST(view_oid AS BIGINT) AS oid, view_name AS relname, CAST(2200 AS BIGINT) AS relnamespace,
       CAST(0 AS BIGINT) AS reltype, CAST(0 AS BIGINT) AS reloftype, CAST(10 AS BIGINT) AS relowner,
       CAST(2 AS BIGINT) AS relam, CAST(view_oid AS BIGINT) AS relfilenode, CAST(0 AS BIGINT) AS reltablespace,
       0 AS relpages, CAST(-1 AS REAL) AS reltuples, 0 AS relallvisible, CAST(0 AS BIGINT) AS reltoastrelid,
       false AS relhasindex, false AS relisshared, 'p' AS relpersistence, 'r' AS relkind,
       CAST(column_count AS SMALLINT) AS relnatts, CAST(0 AS SMALLINT) AS relchecks, false AS relhasrules,
       false AS relhastriggers, false AS relhassubclass, false AS relrowsecurity, false AS relforcerowsecurity,
       true AS relispopulated, 'd' AS relreplident, false AS relispartition, CAST(0 AS BIGINT) AS relrewrite,
       CAST(0 AS BIGINT) AS relfrozenxid, CAST(0 AS BIGINT) AS relminmxid, CAST(NULL AS VARCHAR[]) AS relacl,
       CAST(NULL AS VARCHAR[]) AS reloptions, CAST(NULL AS VARCHAR) AS relpartbound
FROM duckdb_views()
WHERE NOT internal AND NOT temporary AND schema_name = 'main';

CREATE VIEW medlake_pg.pg_attribute AS
SELECT CAST(c.table_oid AS BIGINT) AS attrelid, c.column_name AS attname,
       medlake_pg.type_oid(c.data_type) AS atttypid, -1 AS attstattarget,
       CAST(coalesce(t.typlen, -1) AS SMALLINT) AS attlen, CAST(c.column_index AS SMALLINT) AS attnum,
       0 AS attndims, -1 AS attcacheoff,
       medlake_pg.type_mod(c.data_type, c.numeric_precision, c.numeric_scale) AS atttypmod,
       coalesce(t.typbyval, false) AS attbyval, coalesce(t.typalign, 'i') AS attalign, 'p' AS attstorage,
       '' AS attcompression, NOT c.is_nullable AS attnotnull, false AS atthasdef, false AS atthasmissing,
       '' AS attidentity, '' AS attgenerated, false AS attisdropped, true AS attislocal, 0 AS attinhcount,
       CAST(CASE WHEN t.typcategory = 'S' THEN 100 ELSE 0 END AS BIGINT) AS attcollation,
       CAST(NULL AS VARCHAR[]) AS attacl, CAST(NULL AS VARCHAR[]) AS attoptions,
       CAST(NULL AS VARCHAR[]) AS attfdwoptions, CAST(NULL AS VARCHAR) AS attmissingval
FROM duckdb_columns() c
JOIN medlake_pg.pg_class r ON r.oid = c.table_oid
LEFT JOIN medlake_pg.pg_type t ON t.oid = medlake_pg.type_oid(c.data_type);

CREATE VIEW medlake_pg.pg_database AS
SELECT CAST(16384 AS BIGINT) AS oid, 'medlake' AS datname, CAST(10 AS BIGINT) AS datdba, 6 AS encoding,
       'c' AS datlocprovider, false AS datistemplate, true AS datallowconn, -1 AS datconnlimit,
       CAST(0 AS BIGINT) AS datfrozenxid, CAST(0 AS BIGINT) AS datminmxid, CAST(1663 AS BIGINT) AS dattablespace,
       'C.UTF-8' AS datcollate, 'C.UTF-8' AS datctype, CAST(NULL AS VARCHAR) AS daticulocale,
       CAST(NULL AS VARCHAR) AS daticurules, CAST(NULL AS VARCHAR) AS datcollversion,
       CAST(NULL AS VARCHAR[]) AS datacl;

CREATE VIEW medlake_pg.pg_am AS
SELECT CAST(2 AS BIGINT) AS oid, 'heap' AS amname, 'heap_tableam_handler' AS amhandler, 't' AS amtype;

CREATE VIEW medlake_pg.pg_roles AS
SELECT CAST(10 AS BIGINT) AS oid, 'medlake' AS rolname, false AS rolsuper, true AS rolinherit,
       false AS rolcreaterole, false AS rolcreatedb, true AS rolcanlogin, false AS rolreplication,
       -1 AS rolconnlimit, '********' AS rolpassword, CAST(NULL AS TIMESTAMPTZ) AS rolvaliduntil,
       false AS rolbypassrls, CAST(NULL AS VARCHAR[]) AS rolconfig;

CREATE VIEW medlake_pg.pg_user AS
SELECT 'medlake' AS usename, CAST(10 AS BIGINT) AS usesysid, false AS usecreatedb, false AS usesuper,
       false AS userepl, false AS usebypassrls, '********' AS passwd, CAST(NULL AS TIMESTAMPTZ) AS valuntil,
       CAST(NULL AS VARCHAR[]) AS useconfig;

CREATE VIEW medlake_pg.pg_tablespace AS
SELECT CAST(1663 AS BIGINT) AS oid, 'pg_default' AS spcname, CAST(10 AS BIGINT) AS spcowner,
       CAST(NULL AS VARCHAR[]) AS spcacl, CAST(NULL AS VARCHAR[]) AS spcoptions;

CREATE VIEW medlake_pg.pg_collation AS
SELECT CAST(100 AS BIGINT) AS oid, 'default' AS collname, CAST(11 AS BIGINT) AS collnamespace,
       CAST(10 AS BIGINT) AS collowner, 'd' AS collprovider, true AS collisdeterministic, -1 AS collencoding,
       CAST(NULL AS VARCHAR) AS collcollate, CAST(NULL AS VARCHAR) AS collctype,
       CAST(NULL AS VARCHAR) AS colliculocale, CAST(NULL AS VARCHAR) AS collicurules,
       CAST(NULL AS VARCHAR) AS collversion;

CREATE VIEW medlake_pg.pg_tables AS
SELECT 'public' AS schemaname, relname AS tablename, 'medlake' AS tableowner,
       CAST(NULL AS VARCHAR) AS tablespace, false AS hasindexes, false AS hasrules, false AS hastriggers,
       false AS rowsecurity
FROM medlake_pg.pg_class;

CREATE VIEW medlake_pg.pg_views AS
SELECT 'public' AS schemaname, relname AS viewname, 'medlake' AS viewowner, '' AS definition
FROM medlake_pg.pg_class WHERE false;

-- Functions psql and drivers call that DuckDB lacks or answers for itself.
CREATE MACRO medlake_pg.pg_get_userbyid(id) AS 'medlake';
CREATE MACRO medlake_pg.pg_table_is_visible(id) AS true;
CREATE MACRO medlake_pg.pg_type_is_visible(id) AS true;
CREATE MACRO medlake_pg.pg_get_expr(expr, rel) AS CAST(NULL AS VARCHAR),
    (expr, rel, pretty) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.col_description(rel, col) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.obj_description(obj) AS CAST(NULL AS VARCHAR),
    (obj, cat) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.shobj_description(obj, cat) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_encoding_to_char(enc) AS 'UTF8';
CREATE MACRO medlake_pg.pg_get_indexdef(idx) AS CAST(NULL AS VARCHAR),
    (idx, col, pretty) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_constraintdef(con) AS CAST(NULL AS VARCHAR),
    (con, pretty) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_partkeydef(rel) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_viewdef(rel) AS CAST(NULL AS VARCHAR),
    (rel, pretty) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_relation_size(rel) AS CAST(0 AS BIGINT),
    (rel, fork) AS CAST(0 AS BIGINT);
CREATE MACRO medlake_pg.pg_total_relation_size(rel) AS CAST(0 AS BIGINT);
CREATE MACRO medlake_pg.pg_table_size(rel) AS CAST(0 AS BIGINT);
CREATE MACRO medlake_pg.pg_indexes_size(rel) AS CAST(0 AS BIGINT);
CREATE MACRO medlake_pg.pg_is_in_recovery() AS false;
CREATE MACRO medlake_pg.txid_current() AS CAST(1 AS BIGINT);
CREATE MACRO medlake_pg.current_database() AS 'medlake';
CREATE MACRO medlake_pg.current_schema() AS 'public';
CREATE MACRO medlake_pg.current_schemas(implicit) AS
    CASE WHEN implicit THEN ['pg_catalog', 'public'] ELSE ['public'] END;
CREATE MACRO medlake_pg.array_upper(arr, dim) AS CASE WHEN len(arr) = 0 THEN NULL ELSE len(arr) END;
CREATE MACRO medlake_pg.array_lower(arr, dim) AS CASE WHEN len(arr) = 0 THEN NULL ELSE 1 END;
CREATE MACRO medlake_pg.quote_ident(s) AS
    CASE WHEN regexp_full_match(s, '[a-z_][a-z0-9_$]*') THEN s ELSE '"' || replace(s, '"', '""') || '"' END;
CREATE MACRO medlake_pg.to_regclass(name) AS (
    SELECT min(oid) FROM medlake_pg.pg_class
    WHERE relname = regexp_replace(regexp_replace(name, '^("?public"?|"?pg_catalog"?)\.', ''), '^"(.*)"$', '\1'));
CREATE MACRO medlake_pg.to_regtype(name) AS (
    SELECT min(oid) FROM medlake_pg.pg_type WHERE typname = regexp_replace(name, '^pg_catalog\.', ''));
CREATE MACRO medlake_pg.set_config(name, value, is_local) AS value;
CREATE MACRO medlake_pg.pg_get_statisticsobjdef_columns(obj) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_serial_sequence(rel, col) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_triggerdef(obj) AS CAST(NULL AS VARCHAR),
    (obj, pretty) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_ruledef(obj) AS CAST(NULL AS VARCHAR),
    (obj, pretty) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_function_arguments(obj) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_function_identity_arguments(obj) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_get_function_result(obj) AS CAST(NULL AS VARCHAR);
CREATE MACRO medlake_pg.pg_relation_is_publishable(rel) AS false;
CREATE MACRO medlake_pg."current_user"(name) AS name;

-- information_schema, as PostgreSQL shows it: lake tables are base tables
-- in public. The rewrite sends information_schema.X to
-- medlake_pg.information_schema_X.
CREATE VIEW medlake_pg.information_schema_tables AS
SELECT 'medlake' AS table_catalog, 'public' AS table_schema, relname AS table_name, 'BASE TABLE' AS table_type,
       CAST(NULL AS VARCHAR) AS self_referencing_column_name, CAST(NULL AS VARCHAR) AS reference_generation,
       CAST(NULL AS VARCHAR) AS user_defined_type_catalog, CAST(NULL AS VARCHAR) AS user_defined_type_schema,
       CAST(NULL AS VARCHAR) AS user_defined_type_name, 'NO' AS is_insertable_into, 'NO' AS is_typed,
       CAST(NULL AS VARCHAR) AS commit_action
FROM medlake_pg.pg_class;

CREATE VIEW medlake_pg.information_schema_columns AS
SELECT 'medlake' AS table_catalog, 'public' AS table_schema, c.relname AS table_name, a.attname AS column_name,
       CAST(a.attnum AS INTEGER) AS ordinal_position, CAST(NULL AS VARCHAR) AS column_default,
       CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END AS is_nullable,
       CASE WHEN a.atttypid = 1700 THEN 'numeric' ELSE medlake_pg.format_type(a.atttypid, NULL) END AS data_type,
       CAST(NULL AS INTEGER) AS character_maximum_length, CAST(NULL AS INTEGER) AS character_octet_length,
       CAST(CASE a.atttypid WHEN 21 THEN 16 WHEN 23 THEN 32 WHEN 20 THEN 64 WHEN 700 THEN 24 WHEN 701 THEN 53
            WHEN 1700 THEN CASE WHEN a.atttypmod >= 4 THEN (a.atttypmod - 4) // 65536 END END AS INTEGER) AS numeric_precision,
       CAST(CASE WHEN a.atttypid IN (21, 23, 20, 1700) THEN 2 WHEN a.atttypid IN (700, 701) THEN 2 END AS INTEGER) AS numeric_precision_radix,
       CAST(CASE WHEN a.atttypid IN (21, 23, 20) THEN 0
            WHEN a.atttypid = 1700 AND a.atttypmod >= 4 THEN (a.atttypmod - 4) % 65536 END AS INTEGER) AS numeric_scale,
       CAST(CASE WHEN a.atttypid IN (1082) THEN 0 WHEN a.atttypid IN (1083, 1114, 1184, 1186) THEN 6 END AS INTEGER) AS datetime_precision,
       'medlake' AS udt_catalog, 'pg_catalog' AS udt_schema, t.typname AS udt_name,
       'NO' AS is_identity, 'NEVER' AS is_generated, 'NO' AS is_updatable
FROM medlake_pg.pg_attribute a
JOIN medlake_pg.pg_class c ON c.oid = a.attrelid
LEFT JOIN medlake_pg.pg_type t ON t.oid = a.atttypid;

CREATE VIEW medlake_pg.information_schema_schemata AS
SELECT 'medlake' AS catalog_name, nspname AS schema_name, 'medlake' AS schema_owner,
       CAST(NULL AS VARCHAR) AS default_character_set_catalog, CAST(NULL AS VARCHAR) AS default_character_set_schema,
       CAST(NULL AS VARCHAR) AS default_character_set_name, CAST(NULL AS VARCHAR) AS sql_path
FROM medlake_pg.pg_namespace;

-- information_schema._pg_expandarray(a): the rows (x, n) of an array's
-- elements and their positions (pgJDBC's getPrimaryKeys).
CREATE MACRO medlake_pg._pg_expandarray(arr) AS
    unnest(list_transform(generate_series(1, len(arr)), i -> {'x': arr[i], 'n': i}));

-- pg_get_keywords(): the parser's keywords (pgJDBC's getSQLKeywords).
CREATE MACRO medlake_pg.pg_get_keywords() AS TABLE
SELECT keyword_name AS word,
       CASE keyword_category WHEN 'reserved' THEN 'R' WHEN 'unreserved' THEN 'U'
            WHEN 'column_name' THEN 'C' ELSE 'T' END AS catcode,
       CAST(keyword_category AS VARCHAR) AS catdesc
FROM duckdb_keywords();

-- pg_backend_pid(): the rewrite passes the connection's process id.
CREATE MACRO medlake_pg.pg_backend_pid(pid) AS CAST(pid AS INTEGER);
