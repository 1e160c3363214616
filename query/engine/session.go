package engine

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/medlake/medlake/query/auth"
)

// ErrUnknownParamType means DuckDB cannot infer a parameter's type even when
// it is taken as text; the client should add an explicit cast ($1::INTEGER).
var ErrUnknownParamType = errors.New("could not determine data type of parameter")

// Type is a DuckDB column or parameter type. Width and Scale are set for
// DECIMAL. Unknown is true for a parameter DuckDB left untyped; it is bound
// as text.
type Type struct {
	ID    duckdb.Type
	Width uint8
	Scale uint8
}

// Column describes one result column.
type Column struct {
	Name string
	Type Type
}

// SyntaxError is a statement DuckDB could not parse.
type SyntaxError struct{ Msg string }

func (e *SyntaxError) Error() string { return e.Msg }

// Session is one client's DuckDB connection with its prepared statements, bound to
// the principal the client logged in as: every statement it prepares is scoped to what
// the principal may read (scope.go).
// A Session is not safe for concurrent use: a wire connection owns it and
// runs one command at a time, as the PostgreSQL protocol does.
type Session struct {
	e         *Engine
	conn      *sql.Conn
	principal auth.Principal
	filter    map[string]any // the scope filter's SELECT node; nil for an admin
	// noRollups and noPruning turn off the rewrites of rollups.go and prune.go for
	// statements prepared afterwards (SetRewrites); noElapsed those of epoch.go and
	// quantile.go (SetExpressionRewrites).
	noRollups, noPruning, noElapsed bool
}

// SetRewrites turns the rollup and file-pruning rewrites on or off for statements the
// session prepares from now on, to compare their answers and times with the table's.
// Both are on by default; the tenant scope is applied either way.
func (s *Session) SetRewrites(rollups, pruning bool) {
	s.noRollups, s.noPruning = !rollups, !pruning
}

// SetExpressionRewrites turns the expression rewrites, elapsed time (epoch.go) and
// merged percentiles (quantile.go), on or off for statements the session prepares
// from now on. They are on by default; answers are the same either way, bit for bit,
// only their time differs.
func (s *Session) SetExpressionRewrites(on bool) {
	s.noElapsed = !on
}

// Session opens a dedicated DuckDB connection for principal. Close it when done.
func (e *Engine) Session(ctx context.Context, principal auth.Principal) (*Session, error) {
	c, err := e.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening duckdb connection: %w", err)
	}
	s := &Session{e: e, conn: c, principal: principal}
	if !principal.Admin {
		if s.filter, err = filterTemplate(ctx, c, principal); err != nil {
			c.Close()
			return nil, err
		}
	}
	return s, nil
}

// Principal returns who the session reads as.
func (s *Session) Principal() auth.Principal { return s.principal }

// Close closes the session's connection (and so its statements).
func (s *Session) Close() error { return s.conn.Close() }

// Statement is a prepared read-only statement with its parameter and result
// types known before execution.
type Statement struct {
	s          *Session
	stmt       *duckdb.Stmt
	text       string       // as the client sent it
	sql        string       // as prepared: scoped, parameters cast
	cast       map[int]bool // parameters cast to VARCHAR (castParams)
	generation int64        // the engine's view generation when scoped and prepared
	Params     []Type
	Columns    []Column
	// Tables are the lake tables the statement reads, by name, for the audit log.
	Tables []string
}

// Prepare checks and prepares one SELECT. Parameter types come from DuckDB's
// binder; parameters it leaves untyped are rewritten to CAST($n AS VARCHAR)
// and the statement is prepared again, so every parameter and column has a
// concrete type, which the wire protocol must report before execution.
//
// For a principal that is not an admin the statement is first scoped (scope.go): what
// is prepared is the rewritten SQL, and anything the scope refuses fails with an
// *Error of SQLSTATE 42501 (or 42P01 for an unknown table).
//
// The statement remembers the view generation from before the scope ran: if a refresh
// added or replaced a view between the scope and the prepare, the first execution
// scopes and prepares it again (rebindIfStale), so the scope never judged a statement
// against a table set other than the one it binds to.
func (s *Session) Prepare(ctx context.Context, text string) (*Statement, error) {
	gen := s.e.generation.Load()
	query, tables, err := s.scope(ctx, text)
	if err != nil {
		return nil, err
	}
	st, err := s.prepare(ctx, query)
	if err != nil {
		return nil, err
	}
	st.text, st.Tables, st.generation = text, tables, gen
	unknown := map[int]bool{}
	for i, p := range st.Params {
		if p.ID == duckdb.TYPE_INVALID || p.ID == duckdb.TYPE_ANY {
			unknown[i+1] = true
		}
	}
	if len(unknown) > 0 {
		st.Close()
		st, err = s.prepare(ctx, castParams(query, unknown))
		if err != nil {
			return nil, err
		}
		st.text, st.Tables, st.generation, st.cast = text, tables, gen, unknown
		for i, p := range st.Params {
			if p.ID == duckdb.TYPE_INVALID || p.ID == duckdb.TYPE_ANY {
				st.Close()
				return nil, fmt.Errorf("%w $%d", ErrUnknownParamType, i+1)
			}
		}
	}
	for _, c := range st.Columns {
		if c.Type.ID == duckdb.TYPE_INVALID {
			st.Close()
			return nil, fmt.Errorf("%w: result types depend on an untyped parameter", ErrUnknownParamType)
		}
	}
	return st, nil
}

// scope parses query with DuckDB's parser and returns the SQL to prepare (rewritten
// for a tenant user) and the lake tables it reads.
func (s *Session) scope(ctx context.Context, query string) (string, []string, error) {
	tree, err := parse(ctx, s.conn, query)
	if err != nil {
		if s.filter != nil && errors.Is(err, ErrNotReadOnly) {
			return "", nil, &Error{Code: CodeInsufficientPrivilege, Msg: "permission denied: only single SELECT statements are permitted", Err: err}
		}
		return "", nil, err
	}
	rewrote := false
	if !s.noRollups {
		if rewrote, err = s.e.useRollups(ctx, s.conn, tree); err != nil {
			return "", nil, err
		}
	}
	elapsed := false
	if !s.noElapsed {
		if elapsed, err = s.e.rewriteEpochDiffs(ctx, s.conn, tree); err != nil {
			return "", nil, err
		}
		merged, err := mergeQuantiles(ctx, s.conn, tree)
		if err != nil {
			return "", nil, err
		}
		elapsed = elapsed || merged
	}
	sc := &scoper{principal: s.principal, tables: s.e.scopeTables(), filter: s.filter, metaSchemas: s.e.metaSchemas}
	if s.filter == nil {
		sc.history = &historyResolver{ctx: ctx, e: s.e}
	}
	tables, err := sc.scope(tree)
	if err != nil {
		return "", nil, err
	}
	pruned := false
	if !s.noPruning {
		if pruned, err = s.e.pruneFiles(ctx, s.conn, tree); err != nil {
			return "", nil, err
		}
	}
	if s.filter == nil && !sc.history.used && !rewrote && !pruned && !elapsed {
		return query, tables, nil
	}
	scoped, err := deparse(ctx, s.conn, tree)
	if err != nil {
		return "", nil, err
	}
	return scoped, tables, nil
}

func (s *Session) prepare(ctx context.Context, query string) (*Statement, error) {
	st := &Statement{s: s, sql: query, generation: s.e.generation.Load()}
	err := s.conn.Raw(func(dc any) error {
		c, ok := dc.(*duckdb.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		ds, err := c.PrepareContext(ctx, query)
		if err != nil {
			return err
		}
		st.stmt = ds.(*duckdb.Stmt)
		typ, err := st.stmt.StatementType()
		if err != nil {
			return err
		}
		if typ != duckdb.STATEMENT_TYPE_SELECT {
			return ErrNotReadOnly
		}
		for i := 1; i <= st.stmt.NumInput(); i++ {
			t, err := st.stmt.ParamType(i)
			if err != nil {
				return fmt.Errorf("parameter $%d: %w", i, err)
			}
			st.Params = append(st.Params, Type{ID: t})
		}
		n, err := st.stmt.ColumnCount()
		if err != nil {
			return err
		}
		for i := range n {
			name, err := st.stmt.ColumnName(i)
			if err != nil {
				return err
			}
			t, err := st.stmt.ColumnType(i)
			if err != nil {
				return err
			}
			col := Column{Name: name, Type: Type{ID: t}}
			if t == duckdb.TYPE_DECIMAL {
				ti, err := st.stmt.ColumnTypeInfo(i)
				if err != nil {
					return err
				}
				if d, ok := ti.Details().(*duckdb.DecimalDetails); ok {
					col.Type.Width, col.Type.Scale = d.Width, d.Scale
				}
			}
			st.Columns = append(st.Columns, col)
		}
		return nil
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// Query executes the statement with args (nil elements bind NULL) and calls
// fn for each row as DuckDB computes it. The row slice is reused between
// calls; fn must copy what it keeps. Returning an error from fn stops the
// query with that error. The query holds a statement slot and the session's
// connection until it ends.
func (st *Statement) Query(ctx context.Context, args []any, fn func(row []driver.Value) error) (err error) {
	if len(args) != len(st.Params) {
		return fmt.Errorf("statement has %d parameters, got %d values", len(st.Params), len(args))
	}
	ctx, release, err := st.s.e.begin(ctx)
	if err != nil {
		return err
	}
	defer func() { err = release(err) }()
	return st.query(ctx, args, fn)
}

func (st *Statement) query(ctx context.Context, args []any, fn func(row []driver.Value) error) error {
	if err := st.rebindIfStale(ctx); err != nil {
		return err
	}
	named := make([]driver.NamedValue, len(args))
	for i, a := range args {
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return st.s.conn.Raw(func(dc any) error {
		rows, err := queryStreaming(ctx, st.stmt, named)
		if err != nil {
			return err
		}
		defer rows.Close()
		stop := interruptOnDone(ctx, dc)
		defer stop()
		_, err = readRows(ctx, rows, make([]driver.Value, len(rows.Columns())), 0, fn)
		return err
	})
}

// rebindIfStale scopes and prepares the statement again when a view changed since it
// was prepared, so it reads the current snapshot, through the scope of the current
// tables. The client was told the result's columns when it prepared; if they changed
// (the table's schema evolved), the statement fails the way PostgreSQL's does and the
// client prepares it again.
func (st *Statement) rebindIfStale(ctx context.Context) error {
	gen := st.s.e.generation.Load()
	if gen == st.generation {
		return nil
	}
	query, tables, err := st.s.scope(ctx, st.text)
	if err != nil {
		return err
	}
	if len(st.cast) > 0 {
		query = castParams(query, st.cast)
	}
	fresh, err := st.s.prepare(ctx, query)
	if err != nil {
		return err
	}
	fresh.generation, fresh.Tables = gen, tables
	if !slices.Equal(fresh.Columns, st.Columns) || !slices.Equal(fresh.Params, st.Params) {
		fresh.Close()
		return ErrResultChanged
	}
	st.Close()
	st.stmt, st.sql, st.generation, st.Tables = fresh.stmt, fresh.sql, fresh.generation, fresh.Tables
	return nil
}

// Close releases the prepared statement. Safe to call twice.
func (st *Statement) Close() error {
	if st.stmt == nil {
		return nil
	}
	var err error
	_ = st.s.conn.Raw(func(any) error {
		err = st.stmt.Close()
		return nil
	})
	st.stmt = nil
	return err
}

// acquire waits for a statement slot (Config.MaxConcurrent) and returns its
// release. While waiting, the caller's context still applies.
func (e *Engine) acquire(ctx context.Context) (release func(), err error) {
	if e.slots == nil {
		return func() {}, nil
	}
	select {
	case e.slots <- struct{}{}:
		return func() { <-e.slots }, nil
	case <-ctx.Done():
		return nil, &Error{Code: CodeTooManyConnections, Err: ctx.Err(),
			Msg: fmt.Sprintf("gave up waiting for one of the %d statement slots: %v; retry when fewer queries run", cap(e.slots), ctx.Err())}
	}
}
