package broker

import (
	"context"
	"log/slog"
	"strings"
)

// mochiHandler passes mochi's log records on, except that it downgrades the error the
// bolt store logs on every first start ("failed to get data ... key not found" for the
// $SYS record a fresh store does not hold yet) to debug: an error ops see on every
// healthy start teaches them to ignore errors.
type mochiHandler struct{ slog.Handler }

func (h mochiHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelError && r.Message == "failed to get data" {
		notFound := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" && strings.Contains(a.Value.String(), "key not found") {
				notFound = true
			}
			return true
		})
		if notFound {
			if !h.Enabled(ctx, slog.LevelDebug) {
				return nil
			}
			d := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
			r.Attrs(func(a slog.Attr) bool { d.AddAttrs(a); return true })
			r = d
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h mochiHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return mochiHandler{h.Handler.WithAttrs(attrs)}
}

func (h mochiHandler) WithGroup(name string) slog.Handler {
	return mochiHandler{h.Handler.WithGroup(name)}
}
