// Package shoptrain trains a model on a traffic source's own history: the
// synthetic shop's past (another seed than the traffic it will then send) or
// a Taobao replay. It stands in for the RetrainModel workflow where the demo
// and the load test run without one, so that their recommendations come from
// a model that knows the catalogue the traffic clicks on.
package shoptrain

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/model"
)

// HistorySeedOffset is added to the shop's seed for its history, so the model
// is trained on other clicks than the ones the generator then sends.
const HistorySeedOffset = 1000

// History returns the synthetic shop's past: the same catalogue (item
// popularity and categories) and shoppers, other clicks (another seed), and
// neither late nor invalid records.
func History(shop gen.Config) (*gen.Synthetic, error) {
	shop.LateShare, shop.InvalidShare = 0, 0
	if shop.CatalogueSeed == 0 {
		shop.CatalogueSeed = shop.Seed
	}
	shop.Seed += HistorySeedOffset
	return gen.NewSynthetic(shop)
}

// Sessions reads at most n records of src, one a second from start on, and
// groups the valid ones by user and session into model sessions, in the order
// their first click came, keeping those of at least minClicks clicks (a
// single click teaches the next-item model nothing, but puts its item in the
// model's catalogue). It returns the sessions and the clicks read.
func Sessions(src gen.Source, n int, start time.Time, minClicks int) ([]model.Session, int) {
	bySession := map[string]*model.Session{}
	var order []*model.Session
	var r gen.Record
	t := start
	read := 0
	for read < n && src.Next(&r, t) {
		read++
		t = t.Add(time.Second)
		if !r.Valid {
			continue
		}
		key := r.Click.UserID + "/" + r.Click.SessionID
		s := bySession[key]
		if s == nil {
			s = &model.Session{ID: key, StartMs: r.Click.TimestampMs}
			bySession[key] = s
			order = append(order, s)
		}
		s.Items = append(s.Items, r.Click.ItemID)
		s.Types = append(s.Types, r.Click.Type)
		s.EndMs = r.Click.TimestampMs
	}
	sessions := make([]model.Session, 0, len(order))
	for _, s := range order {
		if len(s.Items) >= minClicks {
			sessions = append(sessions, *s)
		}
	}
	return sessions, read
}

// QuickConfig is a training configuration that takes seconds rather than
// minutes (the demo trains 60,000 clicks in about 7 s on 2 cores): 32
// factors, 2 refinement epochs, no refit on the validation split.
func QuickConfig() model.Config {
	cfg := model.DefaultConfig()
	cfg.Factors, cfg.Epochs, cfg.Refit = 32, 2, false
	return cfg
}

// Stats describes the history a model was trained on.
type Stats struct {
	Clicks   int           // records read from the source
	Sessions int           // sessions trained on
	Took     time.Duration // reading and training
}

// Train trains a model with cfg on n records of src, in sessions of at least
// minClicks clicks (see Sessions), the history starting 24 hours ago.
// Training progress goes to log.
func Train(ctx context.Context, src gen.Source, n, minClicks int, cfg model.Config, log *slog.Logger) (*model.Model, *model.Report, Stats, error) {
	start := time.Now()
	sessions, read := Sessions(src, n, start.Add(-24*time.Hour), minClicks)
	st := Stats{Clicks: read, Sessions: len(sessions)}
	if len(sessions) == 0 {
		return nil, nil, st, fmt.Errorf("training: %d clicks of history hold no session of %d clicks or more", read, minClicks)
	}
	m, rep, err := model.Train(ctx, sessions, cfg, log)
	st.Took = time.Since(start)
	if err != nil {
		return nil, nil, st, fmt.Errorf("training: %w", err)
	}
	return m, rep, st, nil
}
