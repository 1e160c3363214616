// Package chaos is medlake's fault-injection harness: it runs the whole central side and
// a fleet of agents as real processes (mosquitto, a 4-node MinIO behind a loopback
// balancer, PostgreSQL, two or more ingest hubs, a query node, one agent per facility),
// drives a generated workload through them while it kills, restarts and pauses
// components at seeded random points, and then checks that every generated record is
// in the lake exactly once.
//
// The pure parts, the seeded fault schedule (Plan) and the report's arithmetic
// (recovery times, ingestion gaps), are tested in the normal suite; Run, which starts
// servers, is exercised by the chaos-tagged TestChaos and by `medlake chaos`.
//
// It owns the processes it starts and stops every one of them before Run returns. It
// does not own the deploy/local scripts it starts PostgreSQL and mosquitto with, nor
// the generator (cmd/medlake/internal/gen) whose manifest it checks against.
package chaos
