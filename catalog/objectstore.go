package catalog

import (
	"context"
	"fmt"
	"net/http"
	"time"

	icebergs3 "github.com/apache/iceberg-go/io/gocloud/s3"
	"github.com/apache/iceberg-go/utils"
	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// The object store's connections. iceberg-go opens a new S3 client, with a new HTTP
// connection pool, for every table it loads and every file IO it opens, unless the
// context carries an AWS configuration; then the clients share its HTTP client. A
// process that loads tables every second (a hub committing, a query node refreshing)
// without one opens a connection per load and leaves each idle for 90 s, so it holds
// thousands of connections to the store (and to any balancer in front of it) and
// churns through thousands more. WithObjectStore gives a context that shares one pool.

// S3 connection pool tuning: iceberg-go's own values for its per-load clients.
const (
	s3MaxIdleConns    = 256
	s3MaxConnsPerHost = 2048
	s3IdleConnTimeout = 90 * time.Second
)

// objectStore is the AWS configuration every S3 client of one Catalog starts from;
// nil for a local warehouse. Its HTTP client is shared and safe for concurrent use.
type objectStore struct {
	cfg    *aws.Config
	client interface{ CloseIdleConnections() }
}

// newObjectStore builds the shared configuration from the warehouse properties, as
// iceberg-go would for each client, with one frozen HTTP client: a frozen client is
// used as it is, where each S3 client would copy a buildable one, pool and all.
func newObjectStore(ctx context.Context, props map[string]string) (*objectStore, error) {
	cfg, err := icebergs3.ParseAWSConfig(ctx, props)
	if err != nil {
		return nil, fmt.Errorf("configuring the S3 client: %w", err)
	}
	frozen := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = s3MaxIdleConns
		t.MaxIdleConnsPerHost = s3MaxIdleConns
		t.MaxConnsPerHost = s3MaxConnsPerHost
		t.IdleConnTimeout = s3IdleConnTimeout
	}).Freeze()
	closer, ok := frozen.(interface{ CloseIdleConnections() })
	if !ok {
		return nil, fmt.Errorf("configuring the S3 client: unexpected HTTP client %T", frozen)
	}
	cfg.HTTPClient = frozen
	return &objectStore{cfg: cfg, client: closer}, nil
}

// WithObjectStore returns ctx carrying the catalog's object store configuration:
// table loads, scans, commits and archive IO under it share one pool of connections
// to the warehouse. Long-running components should run under such a context; ctx's
// deadline and cancellation are kept. For a local warehouse it returns ctx.
func (c *Catalog) WithObjectStore(ctx context.Context) context.Context {
	if c.store == nil {
		return ctx
	}
	return utils.WithAwsConfig(ctx, c.store.cfg)
}
