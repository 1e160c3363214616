package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"medlake-agent": main})
}

// TestScripts runs the command-line behaviour in testdata/script/*.txtar. Scripts that
// run an agent find a real broker in $BROKER, with a stand-in hub that commits every
// batch (the real hub is tested in hub/ and cmd/medlake).
func TestScripts(t *testing.T) {
	broker := stack.Mosquitto(t)
	ackEverything(t, broker)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("BROKER", broker)
			// Agent configurations need absolute paths and the broker's port, which
			// a script's files cannot know: they say @WORK@ and @BROKER@.
			yamls, err := filepath.Glob(filepath.Join(env.WorkDir, "*.yaml"))
			if err != nil {
				return err
			}
			for _, p := range yamls {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				b = bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("@WORK@"), []byte(env.WorkDir)), []byte("@BROKER@"), []byte(broker))
				if err := os.WriteFile(p, b, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitglob": cmdWaitGlob,
		},
	})
}

// cmdWaitGlob waits (up to 2 minutes, a deadline, not a timing assertion) until a glob
// under $WORK matches, or with ! until it matches nothing: the agent works
// asynchronously.
//
//	waitglob [!] pattern [count]
func cmdWaitGlob(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: waitglob [!] pattern [count]")
	}
	want := -1
	if len(args) == 2 {
		n, err := strconv.Atoi(args[1])
		if err != nil {
			ts.Fatalf("count %q: %v", args[1], err)
		}
		want = n
	}
	pattern := ts.MkAbs(args[0])
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m, err := filepath.Glob(pattern)
		ts.Check(err)
		ok := len(m) > 0 && (want < 0 || len(m) == want)
		if neg {
			ok = len(m) == 0
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitglob %s: %d matches %v after 2m", args[0], len(m), m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ackEverything subscribes to every agent's batches and commits each one.
func ackEverything(t *testing.T, broker string) {
	o := mqtt.NewClientOptions().AddBroker(broker).SetClientID("script-hub").SetCleanSession(true).SetOrderMatters(false)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("stand-in hub connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe("medlake/v1/+/+/+/batch", 1, func(c mqtt.Client, m mqtt.Message) {
		tp, err := protocol.ParseTopic(m.Topic())
		if err != nil {
			t.Errorf("stand-in hub: %v", err)
			return
		}
		b, err := protocol.DecodeBatch(m.Payload())
		if err != nil {
			t.Errorf("stand-in hub: undecodable batch: %v", err)
			return
		}
		ack, err := protocol.EncodeAck(protocol.Ack{BatchID: b.Header.BatchID, Status: protocol.AckCommitted, Table: b.Header.Table, SnapshotID: 1})
		if err != nil {
			t.Errorf("stand-in hub: %v", err)
			return
		}
		c.Publish(protocol.AckTopic(tp.Tenant, tp.Facility, tp.Agent), 1, false, ack)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("stand-in hub subscribe: %v", fmt.Sprint(tok.Error()))
	}
}
