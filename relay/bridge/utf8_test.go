package bridge

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// decodeAll decodes chunks in order, as one stream, and returns each call's
// text.
func decodeAll(chunks ...string) []string {
	var d textDecoder
	var out []string
	for _, c := range chunks {
		out = append(out, d.decode([]byte(c)))
	}
	return append(out, d.flush())
}

func TestDecoderNeverSplitsACharacter(t *testing.T) {
	texts := []string{
		"héllo",
		"日本語",
		"🙂x🙂",
		"a€b¢c𐍈d",
		"\x1b[31mrød\x1b[0m",
	}
	for _, text := range texts {
		// Every split point, and for the 4-byte characters every pair.
		for i := 0; i <= len(text); i++ {
			for j := i; j <= len(text); j++ {
				parts := decodeAll(text[:i], text[i:j], text[j:])
				for _, p := range parts {
					if !utf8.ValidString(p) || strings.ContainsRune(p, utf8.RuneError) {
						t.Fatalf("%q cut at %d and %d: got piece %q; want whole characters", text, i, j, p)
					}
				}
				if got := strings.Join(parts, ""); got != text {
					t.Fatalf("%q cut at %d and %d: got %q; want it back unchanged", text, i, j, got)
				}
			}
		}
	}
}

func TestDecoderReplacesInvalidBytes(t *testing.T) {
	const R = "\uFFFD"
	cases := []struct {
		name string
		in   string
		want string
	}{
		{"lone continuation byte", "a\x80b", "a" + R + "b"},
		{"byte never in UTF-8", "\xff", R},
		{"start byte then ASCII", "\xc3(", R + "("},
		{"truncated three-byte character then ASCII", "\xe2\x82x", R + R + "x"},
		{"overlong encoding", "\xc0\xaf", R + R},
		{"surrogate half", "\xed\xa0\x80", R + R + R},
		{"beyond U+10FFFF", "\xf4\x90\x80\x80", R + R + R + R},
		{"stream ends inside a character", "ok\xe6\x97", "ok" + R + R},
		{"valid around invalid", "日\xff本", "日" + R + "本"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			whole := strings.Join(decodeAll(tc.in), "")
			if whole != tc.want {
				t.Fatalf("decode(%q): got %q; want %q", tc.in, whole, tc.want)
			}
			// Cutting the input anywhere changes nothing.
			for i := 0; i <= len(tc.in); i++ {
				parts := decodeAll(tc.in[:i], tc.in[i:])
				for _, p := range parts {
					if !utf8.ValidString(p) {
						t.Fatalf("decode(%q) cut at %d: piece %q is not valid UTF-8", tc.in, i, p)
					}
				}
				if got := strings.Join(parts, ""); got != tc.want {
					t.Fatalf("decode(%q) cut at %d: got %q; want %q", tc.in, i, got, tc.want)
				}
			}
		})
	}
}

func TestSplitText(t *testing.T) {
	cases := []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"short text is one piece", "abc", 8, []string{"abc"}},
		{"empty text is no piece", "", 8, nil},
		{"ASCII is cut at max", "abcdefg", 3, []string{"abc", "def", "g"}},
		{"a character is never cut", "a日本", 3, []string{"a", "日", "本"}},
		{"four-byte characters", "🙂🙂", 5, []string{"🙂", "🙂"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := splitText(tc.in, tc.max)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
				t.Fatalf("splitText(%q, %d): got %q; want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}
