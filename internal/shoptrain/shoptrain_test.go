package shoptrain

import (
	"context"
	"testing"
	"time"

	"github.com/clickrec/clickrec/gen"
)

// TestTrainOnHistory trains on a small shop's history and checks that the
// model knows its catalogue: the history clicks on the traffic's catalogue,
// and enough clicks see every item.
func TestTrainOnHistory(t *testing.T) {
	shop := gen.Config{Seed: 7, Users: 300, Items: 200, Categories: 10, LateShare: 0.2, InvalidShare: 0.1}
	src, err := History(shop)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_700_000_000, 0)
	sessions, read := Sessions(src, 20_000, start, 2)
	if read != 20_000 || len(sessions) == 0 {
		t.Fatalf("read %d clicks into %d sessions", read, len(sessions))
	}
	clicks := 0
	for i, s := range sessions {
		if len(s.Items) < 2 || len(s.Types) != len(s.Items) || s.EndMs < s.StartMs {
			t.Fatalf("session %d: %+v", i, s)
		}
		if i > 0 && s.StartMs < sessions[i-1].StartMs {
			t.Fatalf("session %d starts before session %d", i, i-1)
		}
		clicks += len(s.Items)
	}
	if clicks > read || clicks < read*8/10 {
		t.Fatalf("%d of %d clicks in sessions of two or more; the history has no invalid records to drop", clicks, read)
	}

	src, _ = History(shop)
	cfg := QuickConfig()
	cfg.Epochs = 0
	m, rep, st, err := Train(context.Background(), src, 20_000, 2, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Clicks != 20_000 || st.Sessions != len(sessions) || rep == nil || m.NumItems() != shop.Items {
		t.Fatalf("stats %+v, model of %d items: want all %d", st, m.NumItems(), shop.Items)
	}
	// The traffic's own clicks land on items the model knows.
	traffic, _ := gen.NewSynthetic(shop)
	var r gen.Record
	for i := range 1000 {
		traffic.Next(&r, start.Add(time.Duration(i)*time.Second))
		if _, ok := m.Index(r.Click.ItemID); r.Valid && !ok {
			t.Fatalf("traffic click on item %d, unknown to the model", r.Click.ItemID)
		}
	}
}
