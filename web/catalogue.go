package web

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/clickrec/clickrec/gen"
)

// Product is one item of the catalogue as the storefront shows it.
type Product struct {
	ItemID       int64   `json:"item_id"`
	Name         string  `json:"name"`
	Category     string  `json:"category"`      // the category id on the wire, e.g. "c7"
	CategoryName string  `json:"category_name"` // e.g. "Coffee & Tea"
	Price        float64 `json:"price"`
	Rank         int     `json:"rank"` // 1 = most viewed in the sample
}

// Category is a department of the shop.
type Category struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Items int    `json:"items"` // products of the category in the catalogue
}

// Catalogue is the synthetic shop's product list: the items that a sample of
// its clickstream touched, with their categories and prices, most viewed
// first. The synthetic generator (package gen) has no product list of its own,
// so the catalogue is read off its clicks: the same seed, item count and
// category count give the same items, categories and prices as the traffic
// the hot path sees. Names are made up from the item id and the category.
// A Catalogue is immutable and safe for concurrent use.
type Catalogue struct {
	products   []Product // by rank
	byID       map[int64]int
	categories []Category // by popularity
	byCategory map[string][]int
}

// DefaultCatalogueSample is how many synthetic clicks NewCatalogue reads: with
// the default shop (10,000 Zipf-popular items) it sees about 9,800 of them,
// every item that the popularity fallback or a trained model is likely to
// recommend, in about half a second.
const DefaultCatalogueSample = 300_000

// NewCatalogue reads sample clicks of the synthetic shop cfg describes and
// returns its catalogue. Late and invalid records are switched off for the
// sample; they do not change the shop.
func NewCatalogue(cfg gen.Config, sample int) (*Catalogue, error) {
	if sample < 1 {
		return nil, fmt.Errorf("catalogue sample must be at least 1 click, got %d", sample)
	}
	cfg.LateShare, cfg.InvalidShare = 0, 0
	src, err := gen.NewSynthetic(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the catalogue: %w", err)
	}
	type seen struct {
		cat   string
		price float64
		views int
	}
	items := map[int64]*seen{}
	var r gen.Record
	t := time.Unix(1_700_000_000, 0)
	for range sample {
		src.Next(&r, t)
		t = t.Add(10 * time.Millisecond)
		s := items[r.Click.ItemID]
		if s == nil {
			s = &seen{cat: r.Click.Category, price: r.Click.Price}
			items[r.Click.ItemID] = s
		}
		s.views++
	}
	c := &Catalogue{byID: make(map[int64]int, len(items)), byCategory: map[string][]int{}}
	for id, s := range items {
		c.products = append(c.products, Product{ItemID: id, Category: s.cat, Price: s.price, Rank: s.views})
	}
	// Rank temporarily holds the view count: most viewed first, then by id.
	slices.SortFunc(c.products, func(a, b Product) int {
		return cmp.Or(cmp.Compare(b.Rank, a.Rank), cmp.Compare(a.ItemID, b.ItemID))
	})
	catViews := map[string]int{}
	for i := range c.products {
		p := &c.products[i]
		catViews[p.Category] += p.Rank
		p.Rank = i + 1
		p.CategoryName = CategoryName(p.Category)
		p.Name = productName(p.ItemID, p.Category)
		c.byID[p.ItemID] = i
		c.byCategory[p.Category] = append(c.byCategory[p.Category], i)
	}
	for id, idx := range c.byCategory {
		c.categories = append(c.categories, Category{ID: id, Name: CategoryName(id), Items: len(idx)})
	}
	slices.SortFunc(c.categories, func(a, b Category) int {
		return cmp.Or(cmp.Compare(catViews[b.ID], catViews[a.ID]), cmp.Compare(a.ID, b.ID))
	})
	return c, nil
}

// Len returns the number of products.
func (c *Catalogue) Len() int { return len(c.products) }

// Product returns the product with the given item id.
func (c *Catalogue) Product(id int64) (Product, bool) {
	i, ok := c.byID[id]
	if !ok {
		return Product{}, false
	}
	return c.products[i], true
}

// Categories returns the categories, most viewed first. The slice is shared:
// do not modify it.
func (c *Catalogue) Categories() []Category { return c.categories }

// Top returns up to limit products after skipping offset, most viewed first;
// with a category, only that category's. The slice is a copy.
func (c *Catalogue) Top(category string, offset, limit int) []Product {
	out := make([]Product, 0, max(0, min(limit, len(c.products))))
	if category == "" {
		for i := offset; i < len(c.products) && len(out) < limit; i++ {
			out = append(out, c.products[i])
		}
		return out
	}
	idx := c.byCategory[category]
	for i := offset; i < len(idx) && len(out) < limit; i++ {
		out = append(out, c.products[idx[i]])
	}
	return out
}

// HasCategory reports whether the catalogue has a category with this id.
func (c *Catalogue) HasCategory(id string) bool { _, ok := c.byCategory[id]; return ok }

// departments name the synthetic categories c0, c1, …; each has nouns for its
// products. Categories beyond the list reuse it with a number.
var departments = [...]struct {
	name  string
	nouns []string
}{
	{"Coffee & Tea", []string{"Espresso Beans", "Green Tea", "Pour-Over Kit", "Travel Mug", "Chai Blend"}},
	{"Running", []string{"Running Shoes", "Trail Socks", "Hydration Vest", "Wind Jacket", "Cap"}},
	{"Books", []string{"Novel", "Cookbook", "Field Guide", "Poetry Collection", "Atlas"}},
	{"Audio", []string{"Headphones", "Bluetooth Speaker", "Earbuds", "Turntable", "Soundbar"}},
	{"Kitchen", []string{"Chef's Knife", "Cast-Iron Pan", "Cutting Board", "Dutch Oven", "Whisk"}},
	{"Garden", []string{"Pruning Shears", "Watering Can", "Seed Set", "Planter", "Garden Gloves"}},
	{"Toys", []string{"Building Blocks", "Puzzle", "Plush Fox", "Wooden Train", "Kite"}},
	{"Beauty", []string{"Face Cream", "Lip Balm", "Hair Oil", "Soap Bar", "Serum"}},
	{"Outdoor", []string{"Tent", "Sleeping Bag", "Headlamp", "Camping Stove", "Backpack"}},
	{"Office", []string{"Notebook", "Fountain Pen", "Desk Lamp", "Stapler", "Planner"}},
	{"Home Decor", []string{"Vase", "Cushion", "Wall Clock", "Candle", "Throw Blanket"}},
	{"Cycling", []string{"Bike Light", "Helmet", "Saddle Bag", "Bottle Cage", "Bike Lock"}},
	{"Pets", []string{"Dog Bed", "Cat Tree", "Chew Toy", "Leash", "Food Bowl"}},
	{"Photography", []string{"Camera Strap", "Tripod", "Lens Cloth", "Memory Card", "Camera Bag"}},
	{"Games", []string{"Board Game", "Card Game", "Dice Set", "Chess Set", "Game Controller"}},
	{"Baby", []string{"Baby Blanket", "Rattle", "Bib Set", "Stroller Fan", "Teether"}},
	{"Bath", []string{"Bath Towel", "Bath Mat", "Shower Curtain", "Bath Salts", "Robe"}},
	{"Fitness", []string{"Yoga Mat", "Dumbbells", "Jump Rope", "Resistance Band", "Foam Roller"}},
	{"Snacks", []string{"Trail Mix", "Dark Chocolate", "Granola", "Rice Crackers", "Dried Mango"}},
	{"Stationery", []string{"Sticky Notes", "Gel Pens", "Washi Tape", "Sketchbook", "Envelope Set"}},
	{"Tools", []string{"Screwdriver Set", "Hammer", "Tape Measure", "Cordless Drill", "Level"}},
	{"Lighting", []string{"Floor Lamp", "LED Strip", "Pendant Light", "Night Light", "Bulb Pack"}},
	{"Travel", []string{"Carry-On", "Packing Cubes", "Neck Pillow", "Passport Wallet", "Adapter"}},
	{"Music", []string{"Ukulele", "Guitar Strings", "Metronome", "Harmonica", "Music Stand"}},
	{"Smart Home", []string{"Smart Plug", "Door Sensor", "Thermostat", "Smart Bulb", "Hub"}},
	{"Jewelry", []string{"Silver Ring", "Pendant", "Earrings", "Bracelet", "Watch"}},
	{"Bags", []string{"Tote Bag", "Messenger Bag", "Wallet", "Belt Bag", "Laptop Sleeve"}},
	{"Footwear", []string{"Sneakers", "Boots", "Sandals", "Slippers", "Loafers"}},
	{"Knitwear", []string{"Sweater", "Beanie", "Scarf", "Cardigan", "Mittens"}},
	{"Rainwear", []string{"Raincoat", "Umbrella", "Rain Boots", "Poncho", "Rain Hat"}},
	{"Crafts", []string{"Yarn Set", "Paint Set", "Clay Kit", "Embroidery Hoop", "Glue Gun"}},
	{"Pantry", []string{"Olive Oil", "Pasta", "Spice Set", "Honey", "Sea Salt"}},
	{"Tableware", []string{"Dinner Plate", "Wine Glass", "Cutlery Set", "Serving Bowl", "Teapot"}},
	{"Bedding", []string{"Duvet", "Pillow", "Sheet Set", "Mattress Topper", "Quilt"}},
	{"Storage", []string{"Storage Box", "Shelf", "Basket", "Hanger Set", "Drawer Organizer"}},
	{"Cleaning", []string{"Mop", "Microfiber Cloths", "Dish Brush", "Spray Bottle", "Broom"}},
	{"Computing", []string{"Keyboard", "Mouse", "USB Hub", "Monitor Arm", "Webcam"}},
	{"Phones", []string{"Phone Case", "Charger", "Screen Protector", "Power Bank", "Cable"}},
	{"Watches", []string{"Sports Watch", "Watch Strap", "Dress Watch", "Smartwatch", "Pocket Watch"}},
	{"Eyewear", []string{"Sunglasses", "Reading Glasses", "Glasses Case", "Ski Goggles", "Lens Spray"}},
	{"Swim", []string{"Swimsuit", "Goggles", "Swim Cap", "Beach Towel", "Flip-Flops"}},
	{"Winter Sports", []string{"Ski Gloves", "Snowboard Wax", "Thermal Layer", "Ski Socks", "Neck Gaiter"}},
	{"Party", []string{"Balloons", "Party Lights", "Gift Wrap", "Confetti", "Napkins"}},
	{"Wellness", []string{"Massage Ball", "Tea Sampler", "Aroma Diffuser", "Sleep Mask", "Heat Pack"}},
	{"Plants", []string{"Monstera", "Succulent", "Fern", "Bonsai", "Herb Pot"}},
	{"Art", []string{"Art Print", "Canvas", "Poster", "Frame", "Easel"}},
	{"Automotive", []string{"Car Charger", "Seat Cover", "Dash Cam", "Air Freshener", "Ice Scraper"}},
	{"Grill", []string{"Grill Tongs", "Charcoal", "Grill Brush", "Smoker Chips", "Thermometer"}},
	{"Science", []string{"Microscope", "Telescope", "Chemistry Kit", "Globe", "Magnifier"}},
	{"Gifts", []string{"Gift Card", "Gift Box", "Keychain", "Photo Album", "Greeting Card"}},
}

var adjectives = [...]string{
	"Classic", "Everyday", "Compact", "Deluxe", "Eco", "Nordic", "Urban", "Vintage",
	"Studio", "Pro", "Soft", "Bold", "Essential", "Field", "Coastal", "Alpine",
	"Heritage", "Modern", "Pocket", "Handmade", "Midnight", "Sunny", "Wild", "Quiet",
}

// CategoryName returns the display name of a synthetic category id ("c7");
// an id that is not of that form is returned unchanged.
func CategoryName(id string) string {
	n, ok := categoryIndex(id)
	if !ok {
		return id
	}
	d := departments[n%len(departments)]
	if n < len(departments) {
		return d.name
	}
	return d.name + " " + strconv.Itoa(n/len(departments)+1)
}

func categoryIndex(id string) (int, bool) {
	if len(id) < 2 || id[0] != 'c' {
		return 0, false
	}
	n, err := strconv.Atoi(id[1:])
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// productName makes up a stable name from the item id and its category.
func productName(id int64, category string) string {
	h := uint64(id)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
	h ^= h >> 29
	adj := adjectives[h%uint64(len(adjectives))]
	n, ok := categoryIndex(category)
	if !ok {
		return adj + " Item"
	}
	nouns := departments[n%len(departments)].nouns
	return adj + " " + nouns[(h>>8)%uint64(len(nouns))]
}
