package hub

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
)

// archiveWorkers is how many archive chunks a hub writes to the object store at once.
const archiveWorkers = 2

// enqueueChunk hands an archive chunk to the archivers. Like a full commit buffer, a
// busy archiver (or a store that is down) leaves the chunk to the agent's re-send
// rather than stalling the broker connection.
func (in *Ingester) enqueueChunk(b *batch) {
	wait := time.NewTimer(enqueueWait)
	defer wait.Stop()
	select {
	case in.archive <- b:
	case <-wait.C:
		in.m.archiveChunks.WithLabelValues("deferred").Inc()
		in.log.Debug("archivers busy, chunk left to the agent's re-send", "batch_id", b.hdr.BatchID)
	case <-in.ctx().Done():
	}
}

// archiveChunkTimeout bounds storing and indexing one archive chunk.
const archiveChunkTimeout = 30 * time.Second

// runArchiver stores archive chunks until ctx is done. A chunk it cannot store is not
// acknowledged: the agent keeps it spooled and re-sends it.
func (in *Ingester) runArchiver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-in.archive:
			// A request the object store never answers would hold this archiver, and
			// with it every chunk queued behind, for good: bound each chunk's work and
			// leave a chunk that overruns to the agent's re-send.
			cctx, cancel := context.WithTimeout(ctx, archiveChunkTimeout)
			ack, err := in.storeChunk(cctx, b)
			cancel()
			if err != nil {
				if errors.Is(err, catalog.ErrArchiveHash) {
					in.m.archiveChunks.WithLabelValues("rejected").Inc()
					in.reject(&rejection{topic: b.topic, batchID: b.hdr.BatchID, metric: "archive_hash", reason: err.Error()})
					continue
				}
				in.m.archiveChunks.WithLabelValues("failed").Inc()
				in.log.Warn("storing archive chunk failed; the agent re-sends it", "batch_id", b.hdr.BatchID,
					"sha256", b.hdr.SourceSHA256, "part", b.hdr.Part, "parts", b.hdr.Parts, "err", err)
				continue
			}
			in.publishAcks(ctx, []ackOut{ack})
		}
	}
}

// storeChunk makes the chunk durable: the whole archive when it is its only chunk or
// completes it, else the chunk as a part. The archive is indexed in the catalog before
// the ack, so an acknowledged archive can always be found by replay.
func (in *Ingester) storeChunk(ctx context.Context, b *batch) (ackOut, error) {
	h := b.hdr
	sha := h.SourceSHA256
	have, err := in.store.Has(ctx, sha)
	if err != nil {
		return ackOut{}, err
	}
	stored := have
	switch {
	case have:
		in.m.archiveChunks.WithLabelValues("duplicate").Inc()
	case h.Parts == 1:
		if err := in.store.Put(ctx, sha, h.SourceSize, bytes.NewReader(b.chunk)); err != nil {
			return ackOut{}, err
		}
		stored = true
	default:
		if err := in.store.PutPart(ctx, sha, h.Part, h.Parts, b.chunk); err != nil {
			return ackOut{}, err
		}
		// The chunk stored last sees every other one (the store reads its writes), so
		// one hub always assembles the archive; two doing it store the same object.
		if stored, err = in.store.Assemble(ctx, sha, h.Parts, h.SourceSize); err != nil {
			return ackOut{}, err
		}
	}
	if stored {
		now := time.Now().UTC()
		entries := make([]catalog.ArchiveEntry, 0, len(h.Feeds))
		for _, f := range h.Feeds {
			entries = append(entries, catalog.ArchiveEntry{Feed: f, SHA256: sha, Tenant: h.Tenant, Facility: h.Facility,
				Agent: h.Agent, SourceFile: h.SourceFile, SourceDir: h.SourceDir, Size: h.SourceSize,
				SourceMtime: h.SourceModTime, ArchivedAt: now})
		}
		if err := in.cat.RecordArchive(ctx, entries); err != nil {
			return ackOut{}, err
		}
		if !have {
			in.m.archived.Inc()
			in.m.archivedBytes.Add(float64(h.SourceSize))
		}
	}
	if !have {
		in.m.archiveChunks.WithLabelValues("stored").Inc()
	}
	return ackOut{topic: protocol.AckTopic(b.topic.Tenant, b.topic.Facility, b.topic.Agent),
		ack: protocol.Ack{BatchID: h.BatchID, Status: protocol.AckCommitted, Table: protocol.ArchiveTable, CommittedAt: time.Now().UTC()}}, nil
}
