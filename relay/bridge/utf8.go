package bridge

import (
	"unicode/utf8"
)

// maxFrameData is the most data one output frame carries, in bytes.
const maxFrameData = 32 << 10

// textDecoder turns the agent's output bytes into valid UTF-8 text. A
// character whose bytes are split across two reads is held back until the
// rest arrives, so no frame ends in half a character; bytes that can never be
// part of a valid character become U+FFFD, one per byte.
type textDecoder struct {
	carry [utf8.UTFMax - 1]byte
	n     int
}

// decode returns the text of p, holding back an incomplete character at its
// end for the next call.
func (d *textDecoder) decode(p []byte) string {
	if d.n > 0 {
		p = append(d.carry[:d.n:d.n], p...)
		d.n = 0
	}
	if tail := incompleteTail(p); tail > 0 {
		d.n = copy(d.carry[:], p[len(p)-tail:])
		p = p[:len(p)-tail]
	}
	return validText(p)
}

// flush returns what is held back, as U+FFFD per byte: the stream ended in
// the middle of a character.
func (d *textDecoder) flush() string {
	s := validText(d.carry[:d.n])
	d.n = 0
	return s
}

// incompleteTail returns how many bytes at the end of p begin a character
// that is not complete yet but could still become valid.
func incompleteTail(p []byte) int {
	for i := 1; i < utf8.UTFMax && i <= len(p); i++ {
		b := p[len(p)-i]
		if utf8.RuneStart(b) {
			// FullRune counts an invalid prefix as complete (it decodes
			// to an error at once), so only a valid prefix is held back.
			if !utf8.FullRune(p[len(p)-i:]) {
				return i
			}
			return 0
		}
	}
	return 0
}

// validText returns p as a string with every invalid byte replaced by U+FFFD.
func validText(p []byte) string {
	if utf8.Valid(p) {
		return string(p)
	}
	out := make([]byte, 0, len(p)+16)
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, p[:size]...)
		}
		p = p[size:]
	}
	return string(out)
}

// splitText cuts s into pieces of at most max bytes, never inside a
// character. s must be valid UTF-8.
func splitText(s string, max int) []string {
	var parts []string
	for len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		parts = append(parts, s[:cut])
		s = s[cut:]
	}
	if s != "" {
		parts = append(parts, s)
	}
	return parts
}
