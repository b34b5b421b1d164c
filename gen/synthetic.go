package gen

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/clickrec/clickrec/event"
)

// Config describes a synthetic shop and the faults of its traffic.
type Config struct {
	Seed         uint64  // same seed, same times → same records
	Users        int     // shoppers, ids "u1".."u<Users>"
	Items        int     // catalogue size; item ids are 1..Items in random popularity order
	Categories   int     // each item belongs to one category, named "c0".."c<Categories-1>"
	LateShare    float64 // share of records whose event time is 1–9 minutes before they are sent
	InvalidShare float64 // share of invalid records, spread evenly over InvalidReasons
	// CatalogueSeed seeds the catalogue (which item is how popular, and its
	// category) and the order in which shoppers first appear; 0 means Seed.
	// The shop's history (another Seed, the same CatalogueSeed) then clicks on
	// the same catalogue as its traffic.
	CatalogueSeed uint64
	// NewItems is how many brand-new items the shop launches while it runs
	// (see NewItem), spread evenly over the first NewItemsOver after the
	// source's first click: item i (from 0) is introduced (i+0.5)/NewItems
	// of NewItemsOver after it. 0: none, the catalogue stays as it is.
	NewItems     int
	NewItemsOver time.Duration
}

// DefaultConfig returns the default shop: 10,000 users, 10,000 items in 50
// categories, 5% late and 1% invalid records.
func DefaultConfig() Config {
	return Config{Seed: 1, Users: 10_000, Items: 10_000, Categories: 50, LateShare: 0.05, InvalidShare: 0.01}
}

// Validate checks that the configuration describes a shop.
func (c Config) Validate() error {
	var errs []error
	if c.Users < 1 {
		errs = append(errs, fmt.Errorf("users must be at least 1, got %d", c.Users))
	}
	if c.Items < 1 {
		errs = append(errs, fmt.Errorf("items must be at least 1, got %d", c.Items))
	}
	if c.Categories < 1 || c.Categories > c.Items {
		errs = append(errs, fmt.Errorf("categories must be between 1 and items (%d), got %d", c.Items, c.Categories))
	}
	errs = append(errs, validShares(c.LateShare, c.InvalidShare))
	if c.NewItems < 0 || c.NewItems > 0 && c.NewItemsOver <= 0 {
		errs = append(errs, fmt.Errorf("new items (%d) must not be negative, and need a positive span to be introduced over, got %v", c.NewItems, c.NewItemsOver))
	}
	return errors.Join(errs...)
}

func validShares(late, invalid float64) error {
	if !(late >= 0 && late <= 1) || !(invalid >= 0 && invalid <= 1) || late+invalid > 1 {
		return fmt.Errorf("late share %v and invalid share %v must each be in [0, 1] and sum to at most 1", late, invalid)
	}
	return nil
}

// Shopper behaviour. A session picks 1–3 categories (by popularity) and views
// items in them, now and then moving to another of its categories or returning
// to an item it saw; a view leads to a cart of the item with CartRate, a cart
// to a purchase of it with PurchaseRate, one to three clicks later; after each
// view the session ends with sessionEndRate (about 10 views per session) once
// its pending cart and purchases are done. Items are Zipf-popular
// (weight 1/rank^ZipfExponent) over the whole catalogue; the item of a view is
// drawn by that weight within the current category, and categories are drawn
// by their total weight, so the views of all sessions follow the global Zipf law.
const (
	CartRate     = 0.10 // share of views followed by a cart of the same item
	PurchaseRate = 0.30 // share of carts followed by a purchase of the same item
	ZipfExponent = 1.0  // item popularity ∝ 1/rank^ZipfExponent

	sessionEndRate = 0.1
	revisitRate    = 0.15
	switchRate     = 0.3
)

// Timing. A shopper's clicks within a session are a log-normal gap apart
// (median GapMedian, about 1.5 s to 40 s for 90% of them, clamped to
// [0.5 s, 10 min]); between sessions a shopper pauses log-normally around
// BreakMedian (clamped to [2 min, 12 h]).
//
// Gaps and breaks are measured in the times passed to Next, so they are real
// when a pacer drives the source. A session is about 11 clicks 13 s apart
// (mean) followed by a break of 50 minutes (mean), so Users shoppers sustain
// about Users/280 events per second (SustainedRate) with these breaks. Faster
// than that, the longest breaks are cut first: the shopper away longest
// returns. Beyond about Users/13 events per second every shopper is in a
// session and gaps shrink below human pace.
const (
	GapMedian   = 8 * time.Second
	BreakMedian = 30 * time.Minute

	gapSigma   = 1.0
	gapMin     = 500 * time.Millisecond
	gapMax     = 10 * time.Minute
	breakSigma = 1.0
	breakMin   = 2 * time.Minute
	breakMax   = 12 * time.Hour
)

// SustainedRate returns the events per second that users shoppers produce
// with the gaps and breaks above: about users/280.
func SustainedRate(users int) float64 { return float64(users) / 280 }

// SaturatedRate returns the events per second above which every one of users
// shoppers is always in a session and gaps shrink: about users/13.
func SaturatedRate(users int) float64 { return float64(users) / 13 }

// sessionCategories is the cumulative distribution of how many categories a
// session dwells in: 1 (50%), 2 (35%) or 3 (15%).
var sessionCategories = [3]float64{0.50, 0.85, 1}

// Synthetic is a synthetic shop's clickstream. It never runs out.
type Synthetic struct {
	cfg    Config
	rng    *rand.Rand
	cat    catalogue
	users  []shopper
	active timeHeap // shoppers in a session, by the time of their next click
	idle   idlePool // shoppers between sessions
	fresh  []int32  // shoppers not seen yet, popped from the end
	seq    int64
	prefix int    // len of "<seed>-" in idBuf
	idBuf  []byte // "<seed>-<seq>"
	faults faults
	launch launches
}

// shopper is one user's state.
type shopper struct {
	id        string
	sessionID string
	sessions  int
	cats      [3]int32 // categories of the current session
	ncat, cur uint8
	ending    bool  // the session ends once the pending cart and purchases are done
	cart      int32 // rank of the item to put in the cart next, -1 if none
	buys      [8]int32
	buyWait   [8]int8
	nbuy      uint8
	recent    [4]int32 // items seen this session, a ring
	nrecent   uint8
	rpos      uint8
	launch    int32 // 1 + the new item the next click views (its anchor was this one), 0 if none
}

// NewSynthetic returns the clickstream of the shop cfg describes.
func NewSynthetic(cfg Config) (*Synthetic, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid synthetic shop: %w", err)
	}
	catSeed := cfg.CatalogueSeed
	if catSeed == 0 {
		catSeed = cfg.Seed
	}
	crng := rand.New(rand.NewPCG(catSeed, streamCatalogue))
	s := &Synthetic{
		cfg:    cfg,
		rng:    rand.New(rand.NewPCG(cfg.Seed, streamBehaviour)),
		cat:    newCatalogue(cfg.Items, cfg.Categories, crng),
		users:  make([]shopper, cfg.Users),
		active: make(timeHeap, 0, cfg.Users),
		idle:   idlePool{gen: make([]uint32, cfg.Users)},
		fresh:  make([]int32, cfg.Users),
		faults: newFaults(cfg.LateShare, cfg.InvalidShare, cfg.Seed),
	}
	for i := range s.users {
		s.users[i] = shopper{id: "u" + strconv.Itoa(i+1), cart: -1}
	}
	for i, u := range crng.Perm(cfg.Users) {
		s.fresh[i] = int32(u)
	}
	s.idBuf = append(strconv.AppendUint(nil, cfg.Seed, 10), '-')
	s.prefix = len(s.idBuf)
	s.launch = newLaunches(&s.cat, cfg, catSeed)
	return s, nil
}

// Next fills r with the next click of the shop at time now (see Source). It
// always reports true. Event ids are "<seed>-<seq>".
func (s *Synthetic) Next(r *Record, now time.Time) bool {
	t := now.UnixNano()
	s.launch.begin(t)
	u := s.pick(t)
	s.step(u, &r.Click, t)
	s.idBuf = strconv.AppendInt(s.idBuf[:s.prefix], s.seq, 10)
	r.Click.EventID = string(s.idBuf)
	r.Seq = s.seq
	s.seq++
	s.faults.finish(r, now.UnixMilli())
	return true
}

// pick chooses who clicks at time t: a shopper whose next click is due, else
// one whose break is over, else a new one, else the one who has been away
// longest (breaks shrink evenly when the rate exceeds what the shoppers
// sustain), else (everyone is in a session) the one whose click is due first.
func (s *Synthetic) pick(t int64) int32 {
	if len(s.active) > 0 && s.active[0].at <= t {
		return s.active.pop().u
	}
	u, ok := s.idle.popDue(t)
	if !ok && len(s.fresh) > 0 {
		u, ok = s.fresh[len(s.fresh)-1], true
		s.fresh = s.fresh[:len(s.fresh)-1]
	}
	if !ok {
		u, ok = s.idle.popOldest()
	}
	if !ok {
		return s.active.pop().u
	}
	s.startSession(u)
	return u
}

func (s *Synthetic) startSession(u int32) {
	us := &s.users[u]
	us.sessions++
	us.sessionID = us.id + "-s" + strconv.Itoa(us.sessions)
	x := s.rng.Float64()
	us.ncat = 1
	for x >= sessionCategories[us.ncat-1] && us.ncat < 3 {
		us.ncat++
	}
	for i := range us.ncat {
		us.cats[i] = s.cat.sampleCategory(s.rng)
	}
	us.cur, us.ending, us.cart, us.nbuy, us.nrecent, us.rpos, us.launch = 0, false, -1, 0, 0, 0, 0
}

// step makes shopper u click at time t, fills c (all but EventID and
// TimestampMs) and schedules the shopper's next click or break.
func (s *Synthetic) step(u int32, c *event.Click, t int64) {
	us := &s.users[u]
	var rank int32
	newItem := -1 // the new item viewed, if any
	if us.launch > 0 {
		// The view of a new item right after its anchor's, before a cart
		// or purchase that may be due.
		newItem, c.Type = int(us.launch-1), event.View
		us.launch = 0
		if s.rng.Float64() < sessionEndRate {
			us.ending = true
		}
	} else if us.cart >= 0 {
		rank, c.Type = us.cart, event.Cart
		us.cart = -1
		if s.rng.Float64() < PurchaseRate && int(us.nbuy) < len(us.buys) {
			us.buys[us.nbuy], us.buyWait[us.nbuy] = rank, int8(1+s.rng.IntN(3))
			us.nbuy++
		}
	} else if i := us.dueBuy(); i >= 0 {
		rank, c.Type = us.buys[i], event.Purchase
		us.nbuy--
		us.buys[i], us.buyWait[i] = us.buys[us.nbuy], us.buyWait[us.nbuy]
	} else if j := s.launch.pick(t); j >= 0 {
		// A view of the anchor of a new item, whose view follows; the
		// session goes on at least until then.
		rank, c.Type = s.launch.items[j].anchor, event.View
		us.remember(rank)
		us.launch = int32(j + 1)
	} else {
		rank, c.Type = s.view(us), event.View
		if s.rng.Float64() < CartRate {
			us.cart = rank
		}
		if s.rng.Float64() < sessionEndRate {
			us.ending = true
		}
	}
	for i := range us.nbuy {
		us.buyWait[i]--
	}
	c.UserID, c.SessionID = us.id, us.sessionID
	if newItem >= 0 {
		it := &s.launch.items[newItem]
		c.ItemID, c.Category, c.Price = it.ID, it.Category, s.cat.price[it.anchor]
	} else {
		c.ItemID, c.Category, c.Price = s.cat.itemID[rank], s.cat.names[s.cat.category[rank]], s.cat.price[rank]
	}
	switch {
	case us.launch > 0:
		s.active.push(slot{at: t + int64(s.logNormal(LaunchGapMedian, launchGapSigma, gapMin, launchGapMax)), u: u})
	case us.ending && us.cart < 0 && us.nbuy == 0:
		s.idle.add(u, t, t+int64(s.logNormal(BreakMedian, breakSigma, breakMin, breakMax)))
	default:
		s.active.push(slot{at: t + int64(s.logNormal(GapMedian, gapSigma, gapMin, gapMax)), u: u})
	}
}

// dueBuy returns the index of a pending purchase that is due, or -1.
func (us *shopper) dueBuy() int {
	for i := range us.nbuy {
		if us.ending || us.buyWait[i] <= 0 {
			return int(i)
		}
	}
	return -1
}

// view chooses the item of the next view of us.
func (s *Synthetic) view(us *shopper) int32 {
	if us.nrecent > 0 && s.rng.Float64() < revisitRate {
		return us.recent[s.rng.IntN(int(us.nrecent))]
	}
	if us.ncat > 1 && s.rng.Float64() < switchRate {
		us.cur = uint8(s.rng.IntN(int(us.ncat)))
	}
	rank := s.cat.sampleItem(us.cats[us.cur], s.rng)
	us.remember(rank)
	return rank
}

// remember adds an item to the items us saw this session.
func (us *shopper) remember(rank int32) {
	us.recent[us.rpos] = rank
	us.rpos = (us.rpos + 1) % uint8(len(us.recent))
	if int(us.nrecent) < len(us.recent) {
		us.nrecent++
	}
}

func (s *Synthetic) logNormal(median time.Duration, sigma float64, lo, hi time.Duration) time.Duration {
	d := time.Duration(float64(median) * math.Exp(sigma*s.rng.NormFloat64()))
	return min(max(d, lo), hi)
}

// catalogue is the shop's items, indexed by popularity rank (0 = most popular).
type catalogue struct {
	itemID   []int64
	category []int32
	price    []float64
	names    []string    // category names
	catCDF   []float64   // cumulative popularity of the categories
	items    [][]int32   // ranks of each category's items, most popular first
	itemCDF  [][]float64 // cumulative popularity within each category
	rankProb []float64   // share of views of each rank (the Zipf law)
}

func newCatalogue(items, categories int, rng *rand.Rand) catalogue {
	c := catalogue{
		itemID:   make([]int64, items),
		category: make([]int32, items),
		price:    make([]float64, items),
		names:    make([]string, categories),
		catCDF:   make([]float64, categories),
		items:    make([][]int32, categories),
		itemCDF:  make([][]float64, categories),
		rankProb: make([]float64, items),
	}
	for i, id := range rng.Perm(items) {
		c.itemID[i] = int64(id) + 1
	}
	// Every category gets items/categories items (±1) of mixed popularity.
	for j, rank := range rng.Perm(items) {
		c.category[rank] = int32(j % categories)
	}
	base := make([]float64, categories)
	for k := range categories {
		c.names[k] = "c" + strconv.Itoa(k)
		base[k] = 25 * math.Exp(0.7*rng.NormFloat64())
	}
	var total float64
	for rank := range items {
		w := math.Pow(float64(rank+1), -ZipfExponent)
		c.rankProb[rank] = w
		total += w
		k := c.category[rank]
		c.items[k] = append(c.items[k], int32(rank))
		cum := w
		if n := len(c.itemCDF[k]); n > 0 {
			cum += c.itemCDF[k][n-1]
		}
		c.itemCDF[k] = append(c.itemCDF[k], cum)
		p := base[k] * math.Exp(0.4*rng.NormFloat64())
		c.price[rank] = max(0.5, math.Round(p*100)/100)
	}
	var cum float64
	for k := range categories {
		cum += c.itemCDF[k][len(c.itemCDF[k])-1]
		c.catCDF[k] = cum
	}
	for rank := range c.rankProb {
		c.rankProb[rank] /= total
	}
	return c
}

func (c *catalogue) sampleCategory(rng *rand.Rand) int32 {
	return int32(searchCDF(c.catCDF, rng.Float64()*c.catCDF[len(c.catCDF)-1]))
}

func (c *catalogue) sampleItem(k int32, rng *rand.Rand) int32 {
	cdf := c.itemCDF[k]
	return c.items[k][searchCDF(cdf, rng.Float64()*cdf[len(cdf)-1])]
}

// searchCDF returns the first index whose cumulative weight exceeds x, for x
// in [0, cdf[len-1]).
func searchCDF(cdf []float64, x float64) int {
	lo, hi := 0, len(cdf)-1
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cdf[m] > x {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// slot is a shopper and a time (Unix nanoseconds); gen tells a live idle
// entry from a stale one.
type slot struct {
	at  int64
	u   int32
	gen uint32
}

// idlePool holds the shoppers between sessions twice: by the end of their
// break, to take those who are due, and in the order their sessions ended, to
// take the one away longest when none is due. Taking a shopper from one leaves
// a stale entry in the other, skipped by generation and compacted away.
type idlePool struct {
	byBreak timeHeap
	byEnd   []slot // FIFO from head
	head    int
	gen     []uint32 // per shopper: generation of its live entries, 0 if not idle
	next    uint32
	n       int // idle shoppers
}

func (p *idlePool) add(u int32, end, breakEnd int64) {
	p.next++
	if p.next == 0 {
		p.next = 1
	}
	p.gen[u] = p.next
	p.n++
	p.byBreak.push(slot{at: breakEnd, u: u, gen: p.next})
	p.byEnd = append(p.byEnd, slot{at: end, u: u, gen: p.next})
	if live := 2*p.n + 64; len(p.byBreak) > live || len(p.byEnd)-p.head > live {
		p.compact()
	}
}

func (p *idlePool) stale(e slot) bool { return p.gen[e.u] != e.gen }

func (p *idlePool) take(u int32) int32 {
	p.gen[u] = 0
	p.n--
	return u
}

// popDue removes and returns a shopper whose break ended by t.
func (p *idlePool) popDue(t int64) (int32, bool) {
	for len(p.byBreak) > 0 && p.stale(p.byBreak[0]) {
		p.byBreak.pop()
	}
	if len(p.byBreak) == 0 || p.byBreak[0].at > t {
		return 0, false
	}
	return p.take(p.byBreak.pop().u), true
}

// popOldest removes and returns the shopper whose session ended first.
func (p *idlePool) popOldest() (int32, bool) {
	for p.head < len(p.byEnd) {
		e := p.byEnd[p.head]
		p.head++
		if !p.stale(e) {
			return p.take(e.u), true
		}
	}
	return 0, false
}

// compact drops stale entries from both orders.
func (p *idlePool) compact() {
	live := p.byEnd[:0]
	for _, e := range p.byEnd[p.head:] {
		if !p.stale(e) {
			live = append(live, e)
		}
	}
	p.byEnd, p.head = live, 0
	h := p.byBreak[:0]
	for _, e := range p.byBreak {
		if !p.stale(e) {
			h = append(h, e)
		}
	}
	p.byBreak = h
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// timeHeap is a min-heap of slots by time, ties broken by shopper.
type timeHeap []slot

func (h timeHeap) less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].u < h[j].u
}

func (h *timeHeap) push(s slot) {
	*h = append(*h, s)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a.less(i, p) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *timeHeap) pop() slot {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	a.down(0)
	*h = a
	return top
}

func (h timeHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
