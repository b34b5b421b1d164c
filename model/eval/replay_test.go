package eval

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/clickrec/clickrec/model"
)

// trendClicks makes clicks over 4 hours: sessions walk a chain of items
// (i → i+1), and from hour 3 a new item 1000 follows item 5 in most
// sessions, which no model trained on the first hours can know.
func trendClicks() []Click {
	r := rand.New(rand.NewPCG(1, 1))
	var out []Click
	t0 := int64(1_700_000_000_000)
	for s := range 3000 {
		ts := t0 + int64(s)*int64(4*time.Hour/time.Millisecond)/3000
		start := int64(1 + r.IntN(8))
		id := fmt.Sprint("s", s)
		for j := range 4 {
			it := start + int64(j)
			if it == 6 && ts > t0+3*int64(time.Hour/time.Millisecond) && r.IntN(4) > 0 {
				it = 1000
			}
			out = append(out, Click{Session: id, Item: it, TimeMs: ts + int64(j)*1000})
		}
	}
	return out
}

func TestReplayOnlineKnowsTheTrend(t *testing.T) {
	cfg := DefaultReplay()
	cfg.TrainFraction = 0.7
	cfg.ValidFraction = 0.3
	cfg.Model = model.DefaultConfig()
	cfg.Model.Factors, cfg.Model.Iterations, cfg.Model.Epochs, cfg.Model.Workers = 8, 2, 0, 1
	cfg.Model.Retrieval.Neighbors = 0
	res, err := Replay(context.Background(), trendClicks(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Unseen.Cases == 0 || res.Unseen.Frozen.HR20 != 0 {
		t.Fatalf("unseen targets: %+v", res.Unseen)
	}
	if res.Unseen.Online.HR20 < 0.9 || res.Unseen.Blend.HR20 < 0.9 {
		t.Fatalf("the online knowledge misses the trend: %+v", res.Unseen)
	}
	if res.Overall.Blend.MRR20 <= res.Overall.Frozen.MRR20 {
		t.Fatalf("blend %.4f not above frozen %.4f", res.Overall.Blend.MRR20, res.Overall.Frozen.MRR20)
	}
}
