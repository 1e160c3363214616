package engine

import (
	"context"
	"errors"

	"github.com/duckdb/duckdb-go/v2"
)

// SQLState maps an error from a session, statement or query to the
// PostgreSQL SQLSTATE every protocol reports it with, so a client sees the
// same code whichever way it asked. Unknown errors are XX000.
func SQLState(err error) string {
	var coded interface{ SQLState() string }
	if errors.As(err, &coded) {
		return coded.SQLState()
	}
	var se *SyntaxError
	switch {
	case errors.Is(err, ErrNotReadOnly):
		return "25006" // read_only_sql_transaction
	case errors.Is(err, ErrUnknownParamType):
		return "42P18" // indeterminate_datatype
	case errors.Is(err, ErrResultChanged):
		return "0A000" // feature_not_supported, as PostgreSQL reports a changed cached plan
	case errors.Is(err, context.Canceled):
		return "57014" // query_canceled
	case errors.Is(err, context.DeadlineExceeded):
		return "57014"
	case errors.As(err, &se):
		return "42601"
	}
	var de *duckdb.Error
	if errors.As(err, &de) {
		switch de.Type {
		case duckdb.ErrorTypeParser:
			return "42601"
		case duckdb.ErrorTypeCatalog:
			return "42P01"
		case duckdb.ErrorTypeBinder:
			return "42703"
		case duckdb.ErrorTypeConversion, duckdb.ErrorTypeInvalidInput:
			return "22P02"
		case duckdb.ErrorTypeOutOfRange:
			return "22003"
		case duckdb.ErrorTypeDivideByZero:
			return "22012"
		case duckdb.ErrorTypePermission:
			return "42501"
		case duckdb.ErrorTypeInterrupt:
			return "57014"
		case duckdb.ErrorTypeOutOfMemory:
			return CodeOutOfMemory
		}
	}
	return "XX000"
}
