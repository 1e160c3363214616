SELECT oid FROM pg_catalog.pg_class WHERE relname = 'lab_results'
-- next statement
SELECT table_schema, table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name
