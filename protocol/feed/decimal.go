package feed

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow/decimal128"
)

// ParseDecimal reads decimal text ("-12.50", "+3", ".5") exactly into a decimal128 of
// the given precision and scale. Nothing is rounded: more digits after the point than
// scale (trailing zeros aside), or more before it than precision-scale, is an error, as
// is anything but an optional sign, digits and one point (no exponent, no separators).
func ParseDecimal(s string, precision, scale int) (decimal128.Num, error) {
	text := s
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" || !allDigits(whole) || !allDigits(frac) {
		return decimal128.Num{}, fmt.Errorf("%s is not a decimal number", QuoteValue(text))
	}
	frac = strings.TrimRight(frac, "0")
	if len(frac) > scale {
		return decimal128.Num{}, fmt.Errorf("%s has more than %d digit(s) after the decimal point (scale %d)", QuoteValue(text), scale, scale)
	}
	whole = strings.TrimLeft(whole, "0")
	if len(whole) > precision-scale {
		return decimal128.Num{}, fmt.Errorf("%s has more than %d digit(s) before the decimal point (precision %d, scale %d)", QuoteValue(text), precision-scale, precision, scale)
	}
	// The unscaled value is whole, frac and scale-len(frac) zeros: at most 38 digits,
	// accumulated 18 at a time so that short values never leave uint64.
	var n decimal128.Num
	var chunk uint64
	digits := 0
	add := func(d byte) {
		chunk = chunk*10 + uint64(d-'0')
		if digits++; digits == 18 {
			n = n.Mul(decimal128.GetScaleMultiplier(18)).Add(decimal128.FromU64(chunk))
			chunk, digits = 0, 0
		}
	}
	for i := 0; i < len(whole); i++ {
		add(whole[i])
	}
	for i := 0; i < len(frac); i++ {
		add(frac[i])
	}
	for range scale - len(frac) {
		add('0')
	}
	if digits > 0 {
		n = n.Mul(decimal128.GetScaleMultiplier(digits)).Add(decimal128.FromU64(chunk))
	}
	if neg {
		n = n.Negate()
	}
	return n, nil
}

// QuoteValue quotes a source value for an error or a reject reason, cut to 64 bytes on a
// character boundary: the full record travels with the reject.
func QuoteValue(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strconv.Quote(s)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
