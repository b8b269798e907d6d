package bridge

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestConfigFromEnv(t *testing.T) {
	cold := map[string]string{
		"RELAY_URL":       "ws://127.0.0.1:8080",
		"TASK_ID":         "task-1",
		"TASK_CREDENTIAL": "cred",
		"SESSION_ID":      "s_1",
		"USER_ID":         "alice",
		"USER_UID":        "1001",
		"WORKSPACE_ROOT":  "/workspaces/stage",
	}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name    string
		env     map[string]string
		want    func(c *Config)
		wantErr []string
	}{
		{
			name: "cold task",
			env:  cold,
			want: func(c *Config) {},
		},
		{
			name: "warm task needs no session",
			env: with(cold, "WARM", "1", "SESSION_ID", "", "USER_ID", "",
				"USER_UID", ""),
			want: func(c *Config) {
				c.Warm, c.SessionID, c.UserID, c.UID = true, "", "", 0
			},
		},
		{
			name: "agent command and pipes mode",
			env:  with(cold, "AGENT_COMMAND", `my-agent --name 'two words' "x y"`, "AGENT_MODE", "pipes"),
			want: func(c *Config) {
				c.AgentCommand = []string{"my-agent", "--name", "two words", "x y"}
				c.Mode = ModePipes
			},
		},
		{
			name: "empty uid is not set",
			env:  with(cold, "USER_UID", ""),
			want: func(c *Config) { c.UID = 0 },
		},
		{
			name: "http relay URL is accepted",
			env:  with(cold, "RELAY_URL", "http://127.0.0.1:8080/"),
			want: func(c *Config) { c.RelayURL = "http://127.0.0.1:8080/" },
		},
		{
			name: "nothing set",
			env:  map[string]string{},
			wantErr: []string{"RELAY_URL is required", "TASK_ID is required",
				"TASK_CREDENTIAL is required", "SESSION_ID is required", "USER_ID is required",
				"WORKSPACE_ROOT is required"},
		},
		{
			name:    "bad uid",
			env:     with(cold, "USER_UID", "-5"),
			wantErr: []string{"USER_UID: want a decimal uid"},
		},
		{
			name:    "uid too large",
			env:     with(cold, "USER_UID", "4294967296"),
			wantErr: []string{"USER_UID"},
		},
		{
			name:    "bad relay scheme",
			env:     with(cold, "RELAY_URL", "ftp://relay"),
			wantErr: []string{"RELAY_URL: want a ws, wss, http or https URL"},
		},
		{
			name:    "bad mode",
			env:     with(cold, "AGENT_MODE", "tty"),
			wantErr: []string{`AGENT_MODE: want pty or pipes, got "tty"`},
		},
		{
			name:    "bad warm flag",
			env:     with(cold, "WARM", "maybe"),
			wantErr: []string{"WARM: want 1 or 0"},
		},
		{
			name:    "unterminated quote",
			env:     with(cold, "AGENT_COMMAND", `agent "oops`),
			wantErr: []string{`AGENT_COMMAND: unterminated " quote`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConfigFromEnv(func(k string) string { return tc.env[k] })
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ConfigFromEnv: got %+v; want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q; want it to say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ConfigFromEnv: got error %v; want none", err)
			}
			want := Config{
				RelayURL: "ws://127.0.0.1:8080", TaskID: "task-1", Credential: "cred",
				SessionID: "s_1", UserID: "alice", UID: 1001,
				WorkspaceRoot: "/workspaces/stage", Mode: ModePTY,
			}
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ConfigFromEnv:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestConfigMakesWorkspaceRootAbsolute(t *testing.T) {
	env := map[string]string{"RELAY_URL": "ws://h", "TASK_ID": "t", "TASK_CREDENTIAL": "c",
		"WARM": "1", "WORKSPACE_ROOT": ".data/workspaces"}
	got, err := ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, ".data/workspaces"); got.WorkspaceRoot != want {
		t.Errorf("WorkspaceRoot: got %q; want %q", got.WorkspaceRoot, want)
	}
}

func TestSplitWords(t *testing.T) {
	cases := []struct {
		line    string
		want    []string
		wantErr bool
	}{
		{line: "agent", want: []string{"agent"}},
		{line: "  agent   --flag\tvalue  ", want: []string{"agent", "--flag", "value"}},
		{line: `agent 'single quoted $HOME'`, want: []string{"agent", "single quoted $HOME"}},
		{line: `agent "double \"quoted\" \\ \$x \n"`, want: []string{"agent", `double "quoted" \ $x \n`}},
		{line: `agent a\ b`, want: []string{"agent", "a b"}},
		{line: `agent ''`, want: []string{"agent", ""}},
		{line: `agent pre'mid'"post"`, want: []string{"agent", "premidpost"}},
		{line: `agent ; rm -rf / && x | y`,
			want: []string{"agent", ";", "rm", "-rf", "/", "&&", "x", "|", "y"}},
		{line: `agent $HOME ~ *`, want: []string{"agent", "$HOME", "~", "*"}},
		{line: `agent 'open`, wantErr: true},
		{line: `agent "open`, wantErr: true},
		{line: `agent \`, wantErr: true},
		{line: "   ", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.line, func(t *testing.T) {
			got, err := splitWords(tc.line)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("splitWords(%q) = %q; want an error", tc.line, got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("splitWords(%q) = %q, %v; want %q", tc.line, got, err, tc.want)
			}
		})
	}
}

func TestLoginShell(t *testing.T) {
	passwd := filepath.Join(t.TempDir(), "passwd")
	content := "root:x:0:0:root:/root:/bin/bash\n" +
		"dev:x:1000:1000:Dev,,,:/home/dev:/usr/bin/zsh\n" +
		"odd:x:1001:1001::/home/odd:\n"
	if err := os.WriteFile(passwd, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		file  string
		uid   int
		shell string
		want  string
	}{
		{"root from passwd", passwd, 0, "/bin/dash", "/bin/bash"},
		{"user from passwd", passwd, 1000, "", "/usr/bin/zsh"},
		{"empty shell field falls back to SHELL", passwd, 1001, "/bin/fish", "/bin/fish"},
		{"unknown uid falls back to SHELL", passwd, 4242, "/bin/ksh", "/bin/ksh"},
		{"no passwd and no SHELL", filepath.Join(t.TempDir(), "none"), 0, "", "/bin/sh"},
		{"relative SHELL is not trusted", passwd, 4242, "sh", "/bin/sh"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "SHELL" {
					return tc.shell
				}
				return ""
			}
			if got := loginShell(tc.file, tc.uid, getenv); got != tc.want {
				t.Errorf("loginShell: got %q; want %q", got, tc.want)
			}
		})
	}
}

func TestRelayURLs(t *testing.T) {
	cases := []struct {
		base, wantTask, wantWarm string
	}{
		{"ws://127.0.0.1:8080",
			"ws://127.0.0.1:8080/internal/task/s%2F1",
			"ws://127.0.0.1:8080/internal/warm/t%201"},
		{"https://relay.example/prefix/",
			"wss://relay.example/prefix/internal/task/s%2F1",
			"wss://relay.example/prefix/internal/warm/t%201"},
	}
	for _, tc := range cases {
		base, err := relayBase(tc.base)
		if err != nil {
			t.Fatalf("relayBase(%q): %v", tc.base, err)
		}
		if got := taskURL(base, "s/1"); got != tc.wantTask {
			t.Errorf("taskURL(%q): got %q; want %q", tc.base, got, tc.wantTask)
		}
		if got := warmURL(base, "t 1"); got != tc.wantWarm {
			t.Errorf("warmURL(%q): got %q; want %q", tc.base, got, tc.wantWarm)
		}
	}
}
