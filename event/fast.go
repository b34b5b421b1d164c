package event

import (
	"strconv"
	"unicode/utf8"
)

// decodeFast parses the shape nearly every click has: one flat JSON object
// whose keys are the known field names, each at most once, with strings free
// of escapes and valid UTF-8, and numbers in the form their Go types accept.
// It reports false for anything else; the caller then falls back to
// encoding/json, which also explains what is wrong. When it reports true, c
// holds exactly what json.Unmarshal would have produced (FuzzDecodeFast checks
// this). It allocates only the four strings.
func decodeFast(c *Click, b []byte) bool {
	p := fastParser{b: b}
	p.space()
	if !p.take('{') {
		return false
	}
	var seen uint8
	p.space()
	if p.take('}') {
		return p.end()
	}
	for {
		key, ok := p.rawString()
		if !ok {
			return false
		}
		p.space()
		if !p.take(':') {
			return false
		}
		p.space()
		f := fieldOf(key)
		if f < 0 || seen&(1<<f) != 0 {
			return false // unknown (or differently cased) or repeated key
		}
		seen |= 1 << f
		switch f {
		case fEventID, fUserID, fSessionID, fCategory:
			s, ok := p.rawString()
			if !ok {
				return false
			}
			v := string(s)
			switch f {
			case fEventID:
				c.EventID = v
			case fUserID:
				c.UserID = v
			case fSessionID:
				c.SessionID = v
			default:
				c.Category = v
			}
		case fType:
			s, ok := p.rawString()
			if !ok {
				return false
			}
			t, ok := parseTypeBytes(s)
			if !ok {
				return false
			}
			c.Type = t
		case fItemID, fTimestamp:
			n, ok := p.integer()
			if !ok {
				return false
			}
			if f == fItemID {
				c.ItemID = n
			} else {
				c.TimestampMs = n
			}
		case fPrice:
			v, ok := p.float()
			if !ok {
				return false
			}
			c.Price = v
		}
		p.space()
		if p.take(',') {
			p.space()
			continue
		}
		if p.take('}') {
			return p.end()
		}
		return false
	}
}

const (
	fEventID = iota
	fUserID
	fSessionID
	fType
	fItemID
	fCategory
	fPrice
	fTimestamp
)

func fieldOf(k []byte) int {
	switch string(k) { // no allocation: the compiler compares in place
	case "event_id":
		return fEventID
	case "user_id":
		return fUserID
	case "session_id":
		return fSessionID
	case "event_type":
		return fType
	case "item_id":
		return fItemID
	case "category":
		return fCategory
	case "price":
		return fPrice
	case "timestamp_ms":
		return fTimestamp
	}
	return -1
}

func parseTypeBytes(s []byte) (Type, bool) {
	switch string(s) {
	case "view":
		return View, true
	case "cart":
		return Cart, true
	case "purchase":
		return Purchase, true
	}
	return 0, false
}

type fastParser struct {
	b []byte
	i int
}

func (p *fastParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) take(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end accepts only trailing JSON whitespace.
func (p *fastParser) end() bool {
	p.space()
	return p.i == len(p.b)
}

// rawString reads a string without escapes or control characters and with
// valid UTF-8: its bytes are its value.
func (p *fastParser) rawString() ([]byte, bool) {
	if !p.take('"') {
		return nil, false
	}
	start := p.i
	ascii := true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.i++
	}
	return nil, false
}

// number reads a JSON number token and reports whether it has a fraction or
// exponent.
func (p *fastParser) number() (tok []byte, frac bool, ok bool) {
	start := p.i
	p.take('-')
	switch {
	case p.take('0'):
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.digits()
	default:
		return nil, false, false
	}
	if p.take('.') {
		frac = true
		if !p.digits() {
			return nil, false, false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		frac = true
		p.i++
		if !p.take('+') {
			p.take('-')
		}
		if !p.digits() {
			return nil, false, false
		}
	}
	return p.b[start:p.i], frac, true
}

func (p *fastParser) digits() bool {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}

func (p *fastParser) integer() (int64, bool) {
	tok, frac, ok := p.number()
	if !ok || frac {
		return 0, false
	}
	n, err := strconv.ParseInt(string(tok), 10, 64)
	return n, err == nil
}

func (p *fastParser) float() (float64, bool) {
	tok, _, ok := p.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(tok), 64)
	return v, err == nil
}
