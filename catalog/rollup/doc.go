// Package rollup defines the rollup tables: per tenant, facility and day partial
// aggregates (row count; count, sum, min and max of measures) of a lake table, appended
// by the hub with every commit and read by the query engine in place of the table when
// a query asks only for what they hold. It owns the definitions, the aggregation of a
// commit's rows, the rollup table's appends and the check that a rollup describes its
// table exactly; not when the hub calls it nor how queries are rewritten.
package rollup
