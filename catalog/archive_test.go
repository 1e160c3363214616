package catalog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/medlake/medlake/deploy/local/stack"
)

// TestArchiveStore stores archives whole and in parts, on a local warehouse and on
// MinIO: content that does not hash to its name is never stored, parts are assembled
// only when all are there, and reading back verifies the hash.
func TestArchiveStore(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) Config
	}{
		{"local", func(t *testing.T) Config { return Config{DataDir: t.TempDir()} }},
		{"minio", func(t *testing.T) Config {
			s3 := stack.MinIO(t)
			return Config{URI: stack.Postgres(t), Warehouse: "s3://" + s3.Bucket + "/lake", S3Endpoint: s3.Endpoint,
				S3Region: s3.Region, S3AccessKey: s3.AccessKey, S3SecretKey: s3.SecretKey}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "minio" && testing.Short() {
				t.Skip("starts real servers; run without -short")
			}
			ctx := t.Context()
			c, err := Open(ctx, tc.cfg(t))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := c.Archives(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			content := make([]byte, 2500_000)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range content {
				content[i] = byte(rng.Uint32())
			}
			sum := sha256.Sum256(content)
			sha := hex.EncodeToString(sum[:])

			// Wrong content under the name: refused, and nothing stored.
			if err := s.Put(ctx, sha, int64(len(content)), bytes.NewReader(content[1:])); !errors.Is(err, ErrArchiveHash) {
				t.Fatalf("Put of other content: %v, want ErrArchiveHash", err)
			}
			if ok, err := s.Has(ctx, sha); err != nil || ok {
				t.Fatalf("after a refused Put: Has = %v, %v; want false", ok, err)
			}

			// Three parts, the last stored first: no archive until all are there.
			chunks := [][]byte{content[:1<<20], content[1<<20 : 2<<20], content[2<<20:]}
			for _, p := range []int{3, 1} {
				if err := s.PutPart(ctx, sha, p, 3, chunks[p-1]); err != nil {
					t.Fatal(err)
				}
				if ok, err := s.Assemble(ctx, sha, 3, int64(len(content))); err != nil || ok {
					t.Fatalf("Assemble with part 2 missing: %v, %v; want false", ok, err)
				}
			}
			if err := s.PutPart(ctx, sha, 2, 3, chunks[1]); err != nil {
				t.Fatal(err)
			}
			if ok, err := s.Assemble(ctx, sha, 3, int64(len(content))); err != nil || !ok {
				t.Fatalf("Assemble with every part: %v, %v; want true", ok, err)
			}
			rc, err := s.Open(ctx, sha)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("reading the archive back: %d bytes, err %v; want the %d stored", len(got), err, len(content))
			}

			// Parts that do not add up to the name: refused, nothing stored.
			other := sha256.Sum256([]byte("other"))
			osha := hex.EncodeToString(other[:])
			if err := s.PutPart(ctx, osha, 1, 1, []byte("not other")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Assemble(ctx, osha, 1, 9); !errors.Is(err, ErrArchiveHash) {
				t.Fatalf("Assemble of wrong parts: %v, want ErrArchiveHash", err)
			}
			if ok, _ := s.Has(ctx, osha); ok {
				t.Fatal("an archive assembled from wrong parts was stored")
			}

			// The index finds it by feed and time, once however often it is recorded.
			at := time.Now().UTC().Truncate(time.Microsecond)
			e := ArchiveEntry{Feed: "labs", SHA256: sha, Tenant: "t1", Facility: "f1", Agent: "a1", SourceFile: "x.zip",
				SourceDir: "in", Size: int64(len(content)), SourceMtime: at.Add(-time.Minute), ArchivedAt: at}
			for range 2 {
				if err := c.RecordArchive(ctx, []ArchiveEntry{e}); err != nil {
					t.Fatal(err)
				}
			}
			for _, q := range []struct {
				feed         string
				since, until time.Time
				want         int
			}{
				{"labs", at.Add(-time.Hour), time.Time{}, 1},
				{"labs", at.Add(-time.Hour), at, 0},
				{"labs", at.Add(time.Second), time.Time{}, 0},
				{"vitals", at.Add(-time.Hour), time.Time{}, 0},
			} {
				got, err := c.ArchivesOf(ctx, q.feed, q.since, q.until)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != q.want || q.want == 1 && got[0] != e {
					t.Errorf("ArchivesOf(%s, %s, %s) = %+v, want %d entries like %+v", q.feed, q.since, q.until, got, q.want, e)
				}
			}
		})
	}
}
