package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestMochiHandler(t *testing.T) {
	tests := []struct {
		name  string
		level slog.Level
		log   func(*slog.Logger)
		want  string
	}{
		{"fresh store miss is debug", slog.LevelDebug, func(l *slog.Logger) {
			l.Error("failed to get data", "error", errors.New("key not found"), "key", "SYS")
		}, "level=DEBUG msg=\"failed to get data\" lib=mochi error=\"key not found\" key=SYS"},
		{"hidden at info", slog.LevelInfo, func(l *slog.Logger) {
			l.Error("failed to get data", "error", errors.New("key not found"), "key", "SYS")
		}, ""},
		{"other errors stay errors", slog.LevelInfo, func(l *slog.Logger) {
			l.Error("failed to get data", "error", errors.New("disk I/O error"))
		}, "level=ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			base := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tt.level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}})
			tt.log(slog.New(mochiHandler{base}).With("lib", "mochi"))
			got := strings.TrimSpace(buf.String())
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("logged %q, want %q", got, tt.want)
			}
		})
	}
}
