package gen

import (
	"bytes"
	"testing"
	"time"

	"github.com/clickrec/clickrec/event"
)

// newItemShop is the default shop launching 5 new items over the first
// 40 s of its traffic.
func newItemShop() Config {
	cfg := DefaultConfig()
	cfg.Seed, cfg.Users = 7, 50_000
	cfg.NewItems, cfg.NewItemsOver = 5, 40*time.Second
	return cfg
}

// TestNewItems: the new items have ids outside the catalogue; each is
// clicked only after its introduction, always right after its anchor in the
// same session, several times a second at 1,000 clicks/s, by many shoppers.
func TestNewItems(t *testing.T) {
	cfg := newItemShop()
	const n, step = 60_000, time.Millisecond // 60 s at 1,000 clicks/s
	src := newSynthetic(t, cfg)
	items := src.NewItems()
	if len(items) != cfg.NewItems {
		t.Fatalf("%d new items, want %d", len(items), cfg.NewItems)
	}
	byID := map[int64]int{}
	anchors := map[int64]bool{}
	for i, it := range items {
		if want := int64(cfg.Items + 1 + i); it.ID != want {
			t.Errorf("new item %d has id %d, want %d (after the catalogue's 1..%d)", i, it.ID, want, cfg.Items)
		}
		if it.Anchor < 1 || it.Anchor > int64(cfg.Items) {
			t.Errorf("new item %d: anchor %d outside the catalogue", it.ID, it.Anchor)
		}
		if anchors[it.Anchor] {
			t.Errorf("new item %d: anchor %d shared with another new item", it.ID, it.Anchor)
		}
		anchors[it.Anchor] = true
		if want := time.Duration((float64(i) + 0.5) / 5 * float64(40*time.Second)); it.At != want {
			t.Errorf("new item %d introduced at %v, want %v", it.ID, it.At, want)
		}
		byID[it.ID] = i
	}

	category := map[int64]string{} // of every catalogue item clicked
	last := map[string]int64{}     // the item of each session's previous click
	clicks, users := make([]int, len(items)), make([]map[string]bool, len(items))
	first := make([]time.Duration, len(items))
	for i := range users {
		users[i] = map[string]bool{}
	}
	anchorClicks := 0
	each(src, n, step, func(_ int, r *Record, now time.Time) {
		c := &r.Click
		prev := last[c.SessionID]
		last[c.SessionID] = c.ItemID
		j, isNew := byID[c.ItemID]
		if !isNew {
			if c.ItemID < 1 || c.ItemID > int64(cfg.Items) {
				t.Fatalf("click on item %d, neither in the catalogue nor new", c.ItemID)
			}
			category[c.ItemID] = c.Category
			if anchors[c.ItemID] {
				anchorClicks++
			}
			return
		}
		it := items[j]
		at := now.Sub(t0)
		if at < it.At {
			t.Fatalf("new item %d clicked at %v, before its introduction at %v", it.ID, at, it.At)
		}
		if prev != it.Anchor {
			t.Fatalf("new item %d clicked at %v after item %d in session %s, want its anchor %d", it.ID, at, prev, c.SessionID, it.Anchor)
		}
		if c.Type != event.View || c.Category != it.Category {
			t.Fatalf("new item %d: a %s in category %s, want a view in %s", it.ID, c.Type, c.Category, it.Category)
		}
		if clicks[j] == 0 {
			first[j] = at
		}
		clicks[j]++
		users[j][c.UserID] = true
	})
	for j, it := range items {
		if got := category[it.Anchor]; got != it.Category {
			t.Errorf("new item %d is in category %s, its anchor %d in %q", it.ID, it.Category, it.Anchor, got)
		}
		// About NewItemShare × 880 views/s ≈ 3.5 clicks/s from its introduction on.
		live := (time.Duration(n)*step - it.At).Seconds()
		if min := 2 * live; float64(clicks[j]) < min {
			t.Errorf("new item %d: %d clicks in its %.1f s, want at least %.0f", it.ID, clicks[j], live, min)
		}
		if len(users[j]) < clicks[j]*9/10 {
			t.Errorf("new item %d: %d clicks from only %d shoppers", it.ID, clicks[j], len(users[j]))
		}
		if d := first[j] - it.At; d > 5*time.Second {
			t.Errorf("new item %d: first clicked %v after its introduction", it.ID, d)
		}
		t.Logf("new item %d (anchor %d, %s): introduced %v, first click +%v, %d clicks from %d shoppers",
			it.ID, it.Anchor, it.Category, it.At, (first[j] - it.At).Round(time.Millisecond), clicks[j], len(users[j]))
	}
	if anchorClicks == 0 {
		t.Error("no anchor was clicked")
	}
}

// TestNewItemsDeterministic: the same configuration gives the same records,
// and until the first new item is introduced the same records as the shop
// without new items.
func TestNewItemsDeterministic(t *testing.T) {
	cfg := newItemShop()
	const n, step = 20_000, time.Millisecond
	a := generate(newSynthetic(t, cfg), n, step)
	b := generate(newSynthetic(t, cfg), n, step)
	plain := cfg
	plain.NewItems, plain.NewItemsOver = 0, 0
	p := generate(newSynthetic(t, plain), n, step)
	firstAt := newSynthetic(t, cfg).NewItems()[0].At
	differ := false
	for i := range a {
		if !bytes.Equal(a[i].Value, b[i].Value) || !bytes.Equal(a[i].Key, b[i].Key) {
			t.Fatalf("record %d differs between two runs of the same shop:\n%s\n%s", i, a[i].Value, b[i].Value)
		}
		same := bytes.Equal(a[i].Value, p[i].Value)
		if a[i].now.Sub(t0) < firstAt && !same {
			t.Fatalf("record %d at %v, before the first new item (%v), differs from the shop without new items:\n%s\n%s",
				i, a[i].now.Sub(t0), firstAt, a[i].Value, p[i].Value)
		}
		differ = differ || !same
	}
	if !differ {
		t.Error("the new items changed no record")
	}
	other := cfg
	other.Seed, other.CatalogueSeed = cfg.Seed+1, cfg.Seed
	if x, y := newSynthetic(t, cfg).NewItems(), newSynthetic(t, other).NewItems(); x[0] != y[0] {
		t.Errorf("another seed with the same catalogue seed chose other new items: %+v, %+v", x[0], y[0])
	}
}
