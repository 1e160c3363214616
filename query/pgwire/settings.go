package pgwire

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/medlake/medlake/query/sqllex"
)

var errStatementTimeout = errors.New("statement timeout")

// statementTimeout is the session's statement_timeout; zero is none.
func (c *conn) statementTimeout() time.Duration {
	v, _ := c.setting("statement_timeout")
	d, _ := parseDuration(v)
	return d
}

// parseDuration reads a PostgreSQL time setting: a number of milliseconds
// or a number with a unit (us, ms, s, min, h, d).
func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	i := 0
	for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] == '.') {
		i++
	}
	n, err := strconv.ParseFloat(v[:i], 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid value for a time setting: %q", v)
	}
	units := map[string]time.Duration{"": time.Millisecond, "us": time.Microsecond, "ms": time.Millisecond,
		"s": time.Second, "min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}
	u, ok := units[strings.ToLower(strings.TrimSpace(v[i:]))]
	if !ok {
		return 0, fmt.Errorf("invalid unit in time setting %q (us, ms, s, min, h, d)", v)
	}
	return time.Duration(n * float64(u)), nil
}

// sessionSettings are the settings a session may change with SET (or its
// startup message): SHOW and current_setting report the value set. They
// change nothing in the engine. Every other setting in showValues is fixed
// (the engine runs in UTC, UTF-8 and ISO dates): SET accepts it and SHOW
// keeps reporting the fixed value. Custom settings (with a dot, such as
// myapp.tenant) are kept as set.
var sessionSettings = setOf("application_name", "extra_float_digits", "search_path", "statement_timeout",
	"lock_timeout", "idle_in_transaction_session_timeout", "bytea_output")

var setRe = regexp.MustCompile(`(?is)^SET\s+(?:SESSION\s+|LOCAL\s+)?("[^"]+"|[\w.]+)\s*(?:=|\s+TO\s+)\s*(.+?)\s*$`)

// setting returns a setting's value for SHOW and current_setting.
func (c *conn) setting(name string) (string, bool) {
	name = strings.ToLower(name)
	if v, ok := c.settings[name]; ok {
		return v, true
	}
	if v, ok := c.startupSettings[name]; ok {
		return v, true
	}
	v, ok := showValues[name]
	return v, ok
}

// set answers SET name {=|TO} value. Forms that set nothing this server
// reports (SET TIME ZONE, SET TRANSACTION …, SET SESSION CHARACTERISTICS …)
// are accepted.
func (c *conn) set(q string) (*prepared, error) {
	done := &prepared{virtual: &virtualResult{tag: "SET"}}
	m := setRe.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return done, nil
	}
	name := strings.ToLower(strings.Trim(m[1], `"`))
	value := settingValue(m[2])
	if name == "client_encoding" {
		switch strings.ToUpper(strings.ReplaceAll(value, "-", "")) {
		case "UTF8", "UNICODE", "DEFAULT":
		default:
			return nil, errorf("0A000", "only client_encoding UTF8 is supported")
		}
	}
	if !sessionSettings[name] && !strings.Contains(name, ".") {
		return done, nil
	}
	if name == "statement_timeout" && !strings.EqualFold(value, "DEFAULT") {
		if _, err := parseDuration(value); err != nil {
			return nil, errorf("22023", "%v", err)
		}
	}
	return &prepared{run: func(context.Context) (*virtualResult, error) {
		if strings.EqualFold(value, "DEFAULT") {
			delete(c.settings, name)
		} else {
			c.settings[name] = value
		}
		return &virtualResult{tag: "SET"}, nil
	}}, nil
}

// settingValue is the value of SET's right-hand side: a quoted string
// loses its quotes; a list (search_path) is kept as written.
func settingValue(v string) string {
	toks := sqllex.Lex(v)
	var vals []sqllex.Token
	for _, t := range toks {
		if t.Kind != sqllex.Space {
			vals = append(vals, t)
		}
	}
	if len(vals) == 1 {
		if s, ok := vals[0].StringValue(); ok {
			return s
		}
	}
	return v
}

// reset answers RESET name | RESET ALL.
func (c *conn) reset(q string) (*prepared, error) {
	f := strings.Fields(q)
	return &prepared{run: func(context.Context) (*virtualResult, error) {
		if len(f) == 2 {
			if name := strings.ToLower(strings.Trim(f[1], `";`)); name == "all" {
				clear(c.settings)
			} else {
				delete(c.settings, name)
			}
		}
		return &virtualResult{tag: "RESET"}, nil
	}}, nil
}

// showAll answers SHOW ALL: every setting SHOW knows, with the session's
// values.
func (c *conn) showAll() *prepared {
	names := make(map[string]bool, len(showValues))
	for n := range showValues {
		names[n] = true
	}
	for n := range c.settings {
		names[n] = true
	}
	sorted := slices.Sorted(maps.Keys(names))
	rows := make([][]driver.Value, len(sorted))
	for i, n := range sorted {
		v, _ := c.setting(n)
		rows[i] = []driver.Value{n, v, ""}
	}
	return &prepared{
		cols:    []column{{name: "name", t: textCol}, {name: "setting", t: textCol}, {name: "description", t: textCol}},
		virtual: &virtualResult{rows: rows, tag: "SHOW"},
	}
}
