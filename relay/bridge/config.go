package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Mode is how the agent is attached to the bridge.
type Mode string

// Agent modes (AGENT_MODE).
const (
	// ModePTY runs the agent under a pseudo-terminal, for shells and
	// full-screen tools.
	ModePTY Mode = "pty"
	// ModePipes gives the agent plain pipes, for line-oriented agents; its
	// standard output and standard error share one pipe.
	ModePipes Mode = "pipes"
)

// Defaults of the Config fields that do not come from the environment.
const (
	DefaultReconnectWindow = 30 * time.Second
	DefaultStopGrace       = 2 * time.Second
	DefaultQuietPeriod     = 1500 * time.Millisecond
)

// Config is what a bridge is started with. ConfigFromEnv reads it from the
// task's environment; tests fill it in directly.
type Config struct {
	// RelayURL is the relay's base URL (RELAY_URL), ws:// or wss://; http://
	// and https:// are accepted and mean the same.
	RelayURL string
	// TaskID names the task (TASK_ID): the path of a warm task's socket, and
	// the taskArn of every log line.
	TaskID string
	// Credential is the task's signed credential (TASK_CREDENTIAL), sent as
	// a bearer token. It never reaches the agent.
	Credential string

	// Warm says the task waits for init_user (WARM=1).
	Warm bool
	// SessionID, UserID and UID are the session, user and POSIX uid of a
	// task started for one session (SESSION_ID, USER_ID, USER_UID); a warm
	// task learns them from init_user. UID 0 means not set.
	SessionID string
	UserID    string
	UID       int

	// WorkspaceRoot is the folder holding the users' workspace folders
	// (WORKSPACE_ROOT), made absolute.
	WorkspaceRoot string
	// AgentCommand is the agent's command line split into words
	// (AGENT_COMMAND); empty means the login shell of the bridge's user.
	AgentCommand []string
	// Mode is pty (the default) or pipes (AGENT_MODE).
	Mode Mode

	// ReconnectWindow bounds how long the bridge tries to reach the relay
	// after losing it, and at start (default 30 s).
	ReconnectWindow time.Duration
	// StopGrace is how long a stopped agent has between SIGTERM and SIGKILL
	// (default 2 s).
	StopGrace time.Duration
	// QuietPeriod is how long an agent in pipes mode must be silent after
	// an input to count as idle again (default 1.5 s).
	QuietPeriod time.Duration
}

// ConfigFromEnv reads a Config from the environment through getenv
// (os.Getenv in production). Its error names every variable that is missing
// or malformed.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var (
		cfg  Config
		errs []error
	)
	required := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
		return v
	}

	cfg.RelayURL = required("RELAY_URL")
	if cfg.RelayURL != "" {
		if _, err := relayBase(cfg.RelayURL); err != nil {
			errs = append(errs, fmt.Errorf("RELAY_URL: %w", err))
		}
	}
	cfg.TaskID = required("TASK_ID")
	cfg.Credential = required("TASK_CREDENTIAL")

	if v := getenv("WARM"); v != "" {
		warm, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("WARM: want 1 or 0, got %q", v))
		}
		cfg.Warm = warm
	}
	if !cfg.Warm {
		cfg.SessionID = required("SESSION_ID")
		cfg.UserID = required("USER_ID")
		if v := strings.TrimSpace(getenv("USER_UID")); v != "" {
			uid, err := parseUID(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("USER_UID: %w", err))
			}
			cfg.UID = uid
		}
	}

	if root := required("WORKSPACE_ROOT"); root != "" {
		abs, err := filepath.Abs(root)
		if err != nil {
			errs = append(errs, fmt.Errorf("WORKSPACE_ROOT: %w", err))
		}
		cfg.WorkspaceRoot = abs
	}

	if line := strings.TrimSpace(getenv("AGENT_COMMAND")); line != "" {
		words, err := splitWords(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("AGENT_COMMAND: %w", err))
		}
		cfg.AgentCommand = words
	}
	switch m := Mode(strings.TrimSpace(getenv("AGENT_MODE"))); m {
	case "", ModePTY:
		cfg.Mode = ModePTY
	case ModePipes:
		cfg.Mode = ModePipes
	default:
		errs = append(errs, fmt.Errorf("AGENT_MODE: want pty or pipes, got %q", m))
	}

	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		// One line, for the log line that reports it.
		return Config{}, errors.New("bridge configuration: " + strings.Join(msgs, "; "))
	}
	return cfg, nil
}

// parseUID reads a decimal POSIX uid; the largest is that of 32-bit signed
// ids, which every file system and kernel interface here takes.
func parseUID(v string) (int, error) {
	uid, err := strconv.ParseInt(v, 10, 32)
	if err != nil || uid < 0 {
		return 0, fmt.Errorf("want a decimal uid from 0 to 2147483647, got %q", v)
	}
	return int(uid), nil
}

// withDefaults returns cfg with its zero knobs set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.ReconnectWindow <= 0 {
		cfg.ReconnectWindow = DefaultReconnectWindow
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.QuietPeriod <= 0 {
		cfg.QuietPeriod = DefaultQuietPeriod
	}
	if cfg.Mode == "" {
		cfg.Mode = ModePTY
	}
	return cfg
}

// relayBase checks a relay base URL and returns it with a WebSocket scheme
// and without a trailing slash.
func relayBase(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("want a ws, wss, http or https URL, got %q", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("no host in %q", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("want no query or fragment in %q", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// taskURL is the socket of a task started for one session, and of a warm
// task once it has its session.
func taskURL(base, sessionID string) string {
	return base + "/internal/task/" + url.PathEscape(sessionID)
}

// warmURL is the socket of a warm task waiting for its user.
func warmURL(base, taskID string) string {
	return base + "/internal/warm/" + url.PathEscape(taskID)
}

// splitWords splits an AGENT_COMMAND line into words the way a POSIX shell
// splits a simple command, and does nothing else: blanks separate words;
// single quotes keep what they enclose as it is; double quotes do too, except
// that a backslash before ", \, $, ` or a newline stands for that character;
// outside quotes a backslash keeps the next character as it is. There is no
// expansion of variables, globs or ~, and no operators: ";", "|" or "&&" are
// plain characters of a word.
func splitWords(line string) ([]string, error) {
	var (
		words   []string
		word    strings.Builder
		inWord  bool
		quote   rune // 0, '\'' or '"'
		escaped bool
	)
	for _, r := range line {
		switch {
		case escaped:
			if quote == '"' && !strings.ContainsRune("\"\\$`\n", r) {
				word.WriteRune('\\')
			}
			word.WriteRune(r)
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				word.WriteRune(r)
			}
		case quote == '"':
			switch r {
			case '"':
				quote = 0
			case '\\':
				escaped = true
			default:
				word.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	switch {
	case escaped:
		return nil, errors.New("ends with a lone backslash")
	case quote != 0:
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if inWord {
		words = append(words, word.String())
	}
	if len(words) == 0 {
		return nil, errors.New("no command")
	}
	return words, nil
}

// loginShell returns the login shell of the user the bridge runs as: the
// shell field of /etc/passwd for the current uid, else $SHELL, else /bin/sh.
func loginShell(passwdPath string, uid int, getenv func(string) string) string {
	if sh := passwdShell(passwdPath, uid); sh != "" {
		return sh
	}
	if sh := getenv("SHELL"); filepath.IsAbs(sh) {
		return sh
	}
	return "/bin/sh"
}

// passwdShell reads the shell field of uid's line in a passwd file; "" if
// there is none, or if it is not an absolute path.
func passwdShell(path string, uid int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	want := strconv.Itoa(uid)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// name:password:uid:gid:gecos:home:shell
		fields := strings.Split(sc.Text(), ":")
		if len(fields) == 7 && fields[2] == want && filepath.IsAbs(fields[6]) {
			return fields[6]
		}
	}
	return ""
}
