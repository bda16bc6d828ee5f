// Package config reads twokey's YAML configuration: which projects and
// environments exist, who may plan and approve in each, and which Vault roles
// and secrets an apply gets. Unknown keys are rejected, secrets come only from
// environment variables, and Validate lists every problem at once.
package config

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"
)

// Config is the whole file.
type Config struct {
	Slack     Slack     `yaml:"slack"`
	GitHub    GitHub    `yaml:"github"`
	Redis     Redis     `yaml:"redis"`
	Vault     Vault     `yaml:"vault"`
	Terraform Terraform `yaml:"terraform"`
	// DataDir holds workspaces, repository mirrors and saved plan files.
	DataDir string `yaml:"data_dir"`
	// PlanKeyEnv names the environment variable holding the key (32 bytes,
	// base64) that seals saved plans in Redis. Every process that runs
	// plans needs it (a runner of pool P may have its own, in
	// <PlanKeyEnv>_P), and all of a pool's processes the same one, so that
	// any of them can apply what another planned.
	PlanKeyEnv string `yaml:"plan_key_env"`
	// Admins may force-unlock an environment (/tf unlock).
	Admins   Who       `yaml:"admins"`
	Audit    Audit     `yaml:"audit"`
	Runner   Runner    `yaml:"runner"`
	Pools    []Pool    `yaml:"pools"`
	Projects []Project `yaml:"projects"`

	// Signing: keys that sign approvals, grants and audit events (signing.go).
	Signing Signing `yaml:"signing"`

	// Identities link Slack users to GitHub accounts (identities.go), for
	// organisations that manage the mapping centrally.
	Identities []Identity `yaml:"identities"`
}

// Audit is the record of every action (a hash-chained Redis Stream).
type Audit struct {
	// File, if set, also receives every event as a JSON line.
	File string `yaml:"file"`
	// Events older than MaxAge, or beyond the newest MaxLen, are trimmed —
	// but never one younger than MinAge. Defaults: 400 days, no length
	// limit, 90 days.
	MaxAge Duration `yaml:"max_age"`
	MaxLen int64    `yaml:"max_len"`
	MinAge Duration `yaml:"min_age"`
}

// Runner says where plans and applies run.
type Runner struct {
	// Embedded (default true): `twokey serve` runs them itself and needs
	// the Vault login. false: `twokey runner --pool <name>` workers run them,
	// and serve holds no Vault login at all.
	Embedded *bool `yaml:"embedded"`
	// VisibilityTimeout: a worker that stops heartbeating a plan job for
	// this long has died, and another worker of its pool takes the job over.
	VisibilityTimeout Duration `yaml:"visibility_timeout"`
	// Sandbox confines every terraform process: at plan time it runs code
	// from the pull request.
	Sandbox Sandbox `yaml:"sandbox"`
}

// Sandbox says how terraform runs are isolated.
type Sandbox struct {
	// Mode: auto (default) runs each run in bubblewrap and refuses to plan
	// or apply where it cannot; none runs terraform unconfined, as twokey's
	// own user — an explicit opt-out that check-config and every plan
	// message warn about.
	Mode string `yaml:"mode"`
	// ReadOnly are host paths every run sees read-only (a provider mirror,
	// a CLI config file); Writable read-write (a local backend's state).
	ReadOnly []string `yaml:"read_only"`
	Writable []string `yaml:"writable"`
	// UID and GID a run drops to when twokey runs as root (default 65534).
	UID int `yaml:"uid"`
	GID int `yaml:"gid"`
}

// Sandbox modes.
const (
	SandboxAuto = "auto"
	SandboxNone = "none"
)

// IsEmbedded reports whether serve runs plans and applies itself.
func (r Runner) IsEmbedded() bool { return r.Embedded == nil || *r.Embedded }

// Pool is a set of environments whose plans and applies only that pool's
// workers run, with that pool's own Vault login: a non-prod worker holds
// nothing that could apply to prod.
type Pool struct {
	Name  string    `yaml:"name"`
	Vault VaultAuth `yaml:"vault_auth"`
}

// DefaultPool is the pool of environments that name none.
const DefaultPool = "default"

// Slack is the Slack app twokey runs as.
type Slack struct {
	// APIURL is the Web API base; tests and the demo point it at a local server.
	APIURL string `yaml:"api_url"`
	// TeamID, when set, refuses commands and clicks from any other workspace.
	TeamID string `yaml:"team_id"`
	// EnterpriseID, when set, refuses commands and clicks from any other
	// Enterprise Grid organization.
	EnterpriseID string `yaml:"enterprise_id"`
	// Environment variables holding the bot token (xoxb-) and the app-level
	// token (xapp-) used for Socket Mode.
	BotTokenEnv string `yaml:"bot_token_env"`
	AppTokenEnv string `yaml:"app_token_env"`
}

// GitHub is where pull requests are resolved and fetched from.
type GitHub struct {
	APIURL   string `yaml:"api_url"`
	TokenEnv string `yaml:"token_env"`
	// OAuthClientID, if set, lets people link their GitHub account with
	// /tf link github (an OAuth app's or GitHub App's client ID, device
	// flow enabled; no secret). WebURL is GitHub's web base for it,
	// default https://github.com/.
	OAuthClientID string `yaml:"oauth_client_id"`
	WebURL        string `yaml:"web_url"`
	// A GitHub App, instead of the token: AppID and InstallationID, and
	// the App's private key (PEM) from AppPrivateKeyFile or from the
	// variable AppPrivateKeyEnv (default GITHUB_APP_PRIVATE_KEY, or its
	// _FILE); all or none. With an App, twokey works with the
	// installation's short-lived tokens and reports through check runs,
	// which only the App can set.
	AppID             int64  `yaml:"app_id"`
	InstallationID    int64  `yaml:"installation_id"`
	AppPrivateKeyFile string `yaml:"app_private_key_file"`
	AppPrivateKeyEnv  string `yaml:"app_private_key_env"`
}

// DefaultGitHubAppKeyEnv holds a GitHub App's private key when the config
// names no file.
const DefaultGitHubAppKeyEnv = "GITHUB_APP_PRIVATE_KEY"

// App reports whether twokey authenticates to GitHub as an App.
func (g GitHub) App() bool { return g.AppID != 0 }

// AppKeyEnv is the variable that may hold the App's private key.
func (g GitHub) AppKeyEnv() string {
	if g.AppPrivateKeyEnv != "" {
		return g.AppPrivateKeyEnv
	}
	return DefaultGitHubAppKeyEnv
}

// validate checks that an App is configured whole or not at all.
func (g GitHub) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if g.AppID < 0 || g.InstallationID < 0 {
		bad("github.app_id and github.installation_id are positive numbers")
	}
	switch {
	case g.AppID != 0 && g.InstallationID == 0:
		bad("github.app_id is set but github.installation_id is not: a GitHub App needs both, and its private key")
	case g.AppID == 0 && g.InstallationID != 0:
		bad("github.installation_id is set but github.app_id is not: a GitHub App needs both, and its private key")
	case g.AppID == 0 && (g.AppPrivateKeyFile != "" || g.AppPrivateKeyEnv != ""):
		bad("github.app_private_key_file or app_private_key_env is set but github.app_id is not: a GitHub App needs app_id, installation_id and its private key")
	}
	if g.AppPrivateKeyFile != "" && g.AppPrivateKeyEnv != "" {
		bad("github: set app_private_key_file or app_private_key_env, not both")
	}
	return errs
}

// Redis holds locks and plan state.
type Redis struct {
	// URL is a redis:// or rediss:// URL without a password; the password,
	// if any, comes from PasswordEnv. With Sentinel or Cluster it gives only
	// the database, TLS and user.
	URL         string        `yaml:"url"`
	PasswordEnv string        `yaml:"password_env"`
	Sentinel    RedisSentinel `yaml:"sentinel"`
	Cluster     RedisCluster  `yaml:"cluster"`
	// Durability "strict" (default) refuses to start unless Redis persists
	// every write (appendonly yes, appendfsync always): otherwise a Redis
	// restart forgets held locks and resets fencing numbers. "asserted" is
	// for managed services that refuse CONFIG GET: the operator asserts the
	// service persists every write before acknowledging it; twokey still
	// refuses a Redis whose CONFIG GET answers and contradicts that.
	// "relaxed" skips the check, for tests and the demo.
	Durability string `yaml:"durability"`
}

// RedisSentinel: the master's name and the sentinels' addresses.
type RedisSentinel struct {
	Master string   `yaml:"master"`
	Addrs  []string `yaml:"addrs"`
}

// RedisCluster: seed addresses of a Redis Cluster.
type RedisCluster struct {
	Addrs []string `yaml:"addrs"`
}

// Vault is where apply credentials come from.
type Vault struct {
	Address string    `yaml:"address"`
	Auth    VaultAuth `yaml:"auth"`
}

// VaultAuth is how the bot logs in to Vault. It needs only the right to
// create tokens on the environments' token roles and revoke them.
type VaultAuth struct {
	Method      string `yaml:"method"` // "token", "approle" or "kubernetes"
	TokenEnv    string `yaml:"token_env"`
	Mount       string `yaml:"mount"` // the auth method's mount path; default approle or kubernetes
	RoleIDEnv   string `yaml:"role_id_env"`
	SecretIDEnv string `yaml:"secret_id_env"`
	// SecretIDWrapped: the secret ID is a response-wrapping token, unwrapped
	// at login (it opens once, so an intercepted one is noticed).
	SecretIDWrapped bool `yaml:"secret_id_wrapped"`
	// Role is the kubernetes auth method's role; TokenPath the service
	// account token (default: the pod's own, read at every login).
	Role      string `yaml:"role"`
	TokenPath string `yaml:"token_path"`
}

// defaultVaultMount is where an auth method is mounted unless told.
func defaultVaultMount(method string) string {
	if method == "kubernetes" {
		return "kubernetes"
	}
	return "approle"
}

// Terraform is the binary plans and applies run with.
type Terraform struct {
	// Path to terraform (or tofu); looked up in PATH when not absolute.
	Path string `yaml:"path"`
	// Version the binary must report; the runner refuses any other.
	Version string `yaml:"version"`
	// Env is extra, non-secret environment for every terraform process
	// (TF_PLUGIN_CACHE_DIR, proxies, …).
	Env map[string]string `yaml:"env"`
}

// Project is one Terraform root module in one repository, with its
// environments in promotion order (dev → staging → prod).
type Project struct {
	Name string `yaml:"name"`
	Repo string `yaml:"repo"` // owner/name
	Dir  string `yaml:"dir"`  // directory in the repository, default the root
	// Terraform pins this project's binary and version, overriding the
	// top-level terraform (the runner refuses any other version).
	Terraform    *Terraform    `yaml:"terraform"`
	Environments []Environment `yaml:"environments"`
	// Providers lists the provider sources runs may use ("hashicorp/aws").
	// Empty: any provider of the public registries, installed from them or
	// from the operator's mirror.
	Providers []string `yaml:"providers"`
	// AllowPRProviders lets a pull request bring provider binaries of its
	// own (terraform.d/plugins); their sources must still be in Providers.
	AllowPRProviders bool `yaml:"allow_pr_providers"`
	// AllowForkPRs plans pull requests whose head is in a fork. Default
	// false: anyone who can fork the repository could run code at plan time.
	AllowForkPRs bool `yaml:"allow_fork_prs"`
	// Policy checks this project's plans (see Policy); an environment's
	// own policy replaces it.
	Policy *Policy `yaml:"policy"`
}

// Environment is one place a project is applied to.
type Environment struct {
	Name string `yaml:"name"`
	// Protected environments need at least two approvals. Default true.
	Protected         *bool `yaml:"protected"`
	RequiredApprovals int   `yaml:"required_approvals"`
	Approvers         Who   `yaml:"approvers"`
	// Approvals: who may not approve even if listed (identities.go).
	Approvals ApprovalRules `yaml:"approvals"`
	// Requirements are GitHub-side conditions on a pull request, checked
	// when it is planned and again right before apply (requirements.go).
	Requirements []Requirement `yaml:"requirements"`
	// Planners may run /tf plan; empty means anyone in an allowed channel.
	Planners Who `yaml:"planners"`
	// Channels where commands for this environment are accepted; empty means any.
	Channels []string `yaml:"channels"`
	// Dir overrides the project's directory for this environment.
	Dir           string            `yaml:"dir"`
	VarFiles      []string          `yaml:"var_files"`
	BackendConfig map[string]string `yaml:"backend_config"`
	// Workspace is the terraform workspace; default "default".
	Workspace string `yaml:"workspace"`
	// Requires names an earlier environment of the project: a revision is
	// planned here only after it was applied there, at least Soak ago.
	Requires string   `yaml:"requires"`
	Soak     Duration `yaml:"soak"`
	// Pool names the runner pool that plans and applies here.
	Pool string `yaml:"pool"`
	// LockTTL is the lease on the environment lock while work runs; it is
	// refreshed at a third of its length, so a dead bot frees it within LockTTL.
	LockTTL Duration `yaml:"lock_ttl"`
	// PlanTTL is how long a plan waits for approvals before it is void.
	PlanTTL      Duration `yaml:"plan_ttl"`
	PlanTimeout  Duration `yaml:"plan_timeout"`
	ApplyTimeout Duration `yaml:"apply_timeout"`
	Vault        EnvVault `yaml:"vault"`
	// BreakGlass, if set, lets on-call engineers get emergency credentials
	// here without a plan; nil means break-glass is not available.
	BreakGlass *BreakGlass `yaml:"breakglass"`
	// Policy, if set, replaces the project's for this environment.
	Policy *Policy `yaml:"policy"`
	// Drift, if set, checks on a schedule whether live infrastructure still
	// matches the default branch.
	Drift *Drift `yaml:"drift"`
	// Verify, if set, checks every successful apply here right after it,
	// sandboxed, with the plan credentials.
	Verify *Verify `yaml:"verify"`
}

// Verify is what checks an environment after each successful apply.
type Verify struct {
	// Converged: plan the applied commit again; it must show no changes.
	Converged bool `yaml:"converged"`
	// Smoke is a program of the repository (a path from its root, such as
	// ./scripts/smoke.sh) run in the applied commit's checkout after init;
	// it must exit 0.
	Smoke string `yaml:"smoke"`
	// Timeout bounds the smoke program; default DefaultVerifyTimeout.
	Timeout Duration `yaml:"timeout"`
}

// DefaultVerifyTimeout bounds a smoke program without a timeout of its own.
const DefaultVerifyTimeout = 5 * time.Minute

// SmokeTimeout is how long the smoke program may run.
func (v *Verify) SmokeTimeout() time.Duration {
	if v.Timeout > 0 {
		return v.Timeout.D()
	}
	return DefaultVerifyTimeout
}

// driftParser reads drift schedules: standard five-field cron, an
// optional leading seconds field, and descriptors (@daily, @every 1h).
var driftParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// DriftSchedule parses a drift schedule; times are UTC.
func DriftSchedule(spec string) (cron.Schedule, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New("empty")
	}
	return driftParser.Parse(spec)
}

// Drift is an environment's scheduled drift check.
type Drift struct {
	// Schedule is a cron expression ("0 6 * * *"; a leading seconds field
	// and descriptors such as @hourly are accepted), in UTC.
	Schedule string `yaml:"schedule"`
	// Channel gets the reports; default the environment's first channel.
	Channel string `yaml:"channel"`
	// Quiet: no drift says nothing (otherwise one line).
	Quiet bool `yaml:"quiet"`
}

// BreakGlass is an environment's emergency access: who may ask, for how
// long, who must agree, and which Vault token they get.
type BreakGlass struct {
	// OnCall may request (user IDs, or user groups read at request time).
	OnCall Who `yaml:"oncall"`
	// MaxTTL caps the requested duration, and the token's life with it.
	MaxTTL Duration `yaml:"max_ttl"`
	// Approvals is 1 (another on-call member or an approver of the
	// environment agrees) or 0 (self-service). Either way the grant is
	// reviewed afterwards. Default 1.
	Approvals *int `yaml:"approvals"`
	// Role is the Vault token role the emergency token is created from, and
	// Policies the policies it gets (the role must allow exactly these).
	Role     string   `yaml:"role"`
	Policies []string `yaml:"policies"`
	// WrapTTL is how long the response-wrapped token waits to be unwrapped.
	// Default 5m.
	WrapTTL Duration `yaml:"wrap_ttl"`
	// Channel is the security channel where every grant is announced,
	// approved and reviewed.
	Channel string `yaml:"channel"`
	// RemindEvery re-announces a grant that ended but is not yet reviewed.
	// Default 24h.
	RemindEvery Duration `yaml:"remind_every"`
}

// ApprovalsNeeded is 0 or 1.
func (b *BreakGlass) ApprovalsNeeded() int {
	if b.Approvals == nil {
		return 1
	}
	return *b.Approvals
}

// Who lists Slack user IDs and user group IDs.
type Who struct {
	Users  []string `yaml:"users"`
	Groups []string `yaml:"groups"`
}

// Empty reports whether nobody is listed.
func (w Who) Empty() bool { return len(w.Users) == 0 && len(w.Groups) == 0 }

func (w Who) validate(name string) []error {
	var errs []error
	for _, u := range w.Users {
		if !userRE.MatchString(u) {
			errs = append(errs, fmt.Errorf("%s.users: %q is not a Slack user ID (U…); names are never used for decisions", name, u))
		}
	}
	for _, g := range w.Groups {
		if !groupRE.MatchString(g) {
			errs = append(errs, fmt.Errorf("%s.groups: %q is not a Slack user group ID (S…)", name, g))
		}
	}
	return errs
}

// EnvVault is the credentials of one environment: read-only ones for plan,
// write ones for apply.
type EnvVault struct {
	Plan  *Credential `yaml:"plan"`
	Apply Credential  `yaml:"apply"`
}

// Credential is a Vault token role to mint a child token from and the
// secrets to read with that token.
type Credential struct {
	Role    string        `yaml:"role"`
	TTL     Duration      `yaml:"ttl"`
	NumUses int           `yaml:"num_uses"`
	Secrets []VaultSecret `yaml:"secrets"`
}

// VaultSecret maps fields of one Vault secret to environment variables.
// KV version 2 paths (secret/data/…) are read like any other.
type VaultSecret struct {
	Path string            `yaml:"path"`
	Env  map[string]string `yaml:"env"` // ENV_VAR: field
}

// Defaults.
const (
	DefaultSlackAPIURL   = "https://slack.com/api/"
	DefaultGitHubAPIURL  = "https://api.github.com/"
	DefaultLockTTL       = 2 * time.Minute
	DefaultPlanTTL       = 4 * time.Hour
	DefaultPlanTimeout   = 10 * time.Minute
	DefaultApplyTimeout  = 15 * time.Minute
	DefaultCredentialTTL = 15 * time.Minute
	DefaultNumUses       = 10
	DefaultApprovals     = 2
)

// Load reads and parses a config file, fills in defaults and validates it.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Parse reads a config, fills in defaults and validates it: Check,
// accepting nothing it found a problem in.
func Parse(r io.Reader) (*Config, error) {
	c, err := Check(r)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) setDefaults() {
	setDefault(&c.Slack.APIURL, DefaultSlackAPIURL)
	setDefault(&c.Slack.BotTokenEnv, "SLACK_BOT_TOKEN")
	setDefault(&c.Slack.AppTokenEnv, "SLACK_APP_TOKEN")
	setDefault(&c.GitHub.APIURL, DefaultGitHubAPIURL)
	setDefault(&c.GitHub.TokenEnv, "GITHUB_TOKEN")
	setDefault(&c.Redis.URL, "redis://127.0.0.1:6379/0")
	setDefault(&c.Redis.Durability, "strict")
	setDefault(&c.Vault.Auth.Method, "token")
	setDefault(&c.Vault.Auth.TokenEnv, "VAULT_TOKEN")
	setDefault(&c.Vault.Auth.Mount, defaultVaultMount(c.Vault.Auth.Method))
	setDefault(&c.Vault.Auth.RoleIDEnv, "VAULT_ROLE_ID")
	setDefault(&c.Vault.Auth.SecretIDEnv, "VAULT_SECRET_ID")
	setDefault(&c.Terraform.Path, "terraform")
	setDefault(&c.DataDir, "/var/lib/twokey")
	setDefault(&c.PlanKeyEnv, "TWOKEY_PLAN_KEY")
	setDefault(&c.Runner.VisibilityTimeout, Duration(30*time.Second))
	setDefault(&c.Runner.Sandbox.Mode, SandboxAuto)
	setDefault(&c.Audit.MaxAge, Duration(400*24*time.Hour))
	setDefault(&c.Audit.MinAge, Duration(90*24*time.Hour))
	for i := range c.Pools {
		setDefault(&c.Pools[i].Vault.Method, c.Vault.Auth.Method)
		setDefault(&c.Pools[i].Vault.TokenEnv, "VAULT_"+envSuffix(c.Pools[i].Name)+"_TOKEN")
		if c.Pools[i].Vault.Method == c.Vault.Auth.Method {
			setDefault(&c.Pools[i].Vault.Mount, c.Vault.Auth.Mount)
		}
		setDefault(&c.Pools[i].Vault.Mount, defaultVaultMount(c.Pools[i].Vault.Method))
		setDefault(&c.Pools[i].Vault.RoleIDEnv, "VAULT_"+envSuffix(c.Pools[i].Name)+"_ROLE_ID")
		setDefault(&c.Pools[i].Vault.SecretIDEnv, "VAULT_"+envSuffix(c.Pools[i].Name)+"_SECRET_ID")
	}
	for i := range c.Projects {
		for j := range c.Projects[i].Environments {
			e := &c.Projects[i].Environments[j]
			if e.Protected == nil {
				t := true
				e.Protected = &t
			}
			if e.RequiredApprovals == 0 {
				e.RequiredApprovals = DefaultApprovals
			}
			setDefault(&e.LockTTL, Duration(DefaultLockTTL))
			setDefault(&e.PlanTTL, Duration(DefaultPlanTTL))
			setDefault(&e.PlanTimeout, Duration(DefaultPlanTimeout))
			setDefault(&e.ApplyTimeout, Duration(DefaultApplyTimeout))
			setDefault(&e.Pool, DefaultPool)
			e.Vault.Apply.setDefaults()
			if b := e.BreakGlass; b != nil {
				setDefault(&b.WrapTTL, Duration(5*time.Minute))
				setDefault(&b.RemindEvery, Duration(24*time.Hour))
			}
			if e.Vault.Plan != nil {
				e.Vault.Plan.setDefaults()
			}
		}
	}
}

func envSuffix(name string) string {
	return strings.ToUpper(strings.NewReplacer("-", "_").Replace(name))
}

func (cr *Credential) setDefaults() {
	setDefault(&cr.TTL, Duration(DefaultCredentialTTL))
	setDefault(&cr.NumUses, DefaultNumUses)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	repoRE      = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)
	userRE      = regexp.MustCompile(`^[UW][A-Z0-9]{2,}$`)
	groupRE     = regexp.MustCompile(`^S[A-Z0-9]{2,}$`)
	channelRE   = regexp.MustCompile(`^[CGD][A-Z0-9]{2,}$`)
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	vaultPathR  = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
	workspaceRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,90}$`)
)

// ReservedEnv are environment variables twokey sets itself for terraform;
// secrets may not map onto them.
var ReservedEnv = []string{"PATH", "HOME", "TMPDIR", "VAULT_TOKEN", "VAULT_ADDR",
	"TF_CLI_CONFIG_FILE", "TF_IN_AUTOMATION", "CHECKPOINT_DISABLE", "TF_DATA_DIR", "TF_WORKSPACE"}

// Validate reports every problem in the config at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for _, u := range []struct{ name, v string }{{"slack.api_url", c.Slack.APIURL}, {"github.api_url", c.GitHub.APIURL}} {
		if !strings.HasPrefix(u.v, "https://") && !strings.HasPrefix(u.v, "http://") {
			bad("%s: %q is not an http(s) URL", u.name, u.v)
		} else if !strings.HasSuffix(u.v, "/") {
			bad("%s: %q must end with /", u.name, u.v)
		}
	}
	if !strings.HasPrefix(c.Redis.URL, "redis://") && !strings.HasPrefix(c.Redis.URL, "rediss://") {
		bad("redis.url: %q is not a redis:// or rediss:// URL", c.Redis.URL)
	} else if host := strings.SplitN(strings.SplitN(c.Redis.URL, "://", 2)[1], "/", 2)[0]; strings.Contains(host, "@") &&
		strings.Contains(strings.SplitN(host, "@", 2)[0], ":") { // a user name (a Redis ACL user) is fine
		bad("redis.url: put the password in the variable named by redis.password_env, not in the URL")
	}
	if !slices.Contains([]string{"strict", "asserted", "relaxed"}, c.Redis.Durability) {
		bad("redis.durability: %q is not strict, asserted or relaxed", c.Redis.Durability)
	}
	errs = append(errs, c.GitHub.validate()...)
	errs = append(errs, c.Admins.validate("admins")...)
	if c.Vault.Address == "" {
		bad("vault.address is required")
	}
	errs = append(errs, c.Vault.Auth.validate("vault.auth")...)
	if c.Terraform.Version == "" {
		bad("terraform.version is required: the runner refuses a binary that does not report it")
	}
	if len(c.Redis.Sentinel.Addrs) > 0 && c.Redis.Sentinel.Master == "" || len(c.Redis.Sentinel.Addrs) == 0 && c.Redis.Sentinel.Master != "" {
		bad("redis.sentinel needs both master and addrs")
	}
	if len(c.Redis.Sentinel.Addrs) > 0 && len(c.Redis.Cluster.Addrs) > 0 {
		bad("redis: choose sentinel or cluster, not both")
	}
	if c.Audit.MinAge > c.Audit.MaxAge {
		bad("audit.min_age (%v) is longer than audit.max_age (%v)", c.Audit.MinAge, c.Audit.MaxAge)
	}
	if c.Audit.MaxLen < 0 {
		bad("audit.max_len must not be negative")
	}
	if c.Runner.VisibilityTimeout < Duration(time.Second) {
		bad("runner.visibility_timeout must be at least 1s")
	}
	errs = append(errs, c.validateSandbox()...)
	pools := map[string]bool{DefaultPool: true}
	for i, p := range c.Pools {
		if !nameRE.MatchString(p.Name) {
			bad("pools[%d]: name %q must be lowercase letters, digits, - and _", i, p.Name)
		}
		if pools[p.Name] && p.Name != DefaultPool {
			bad("pool %q: defined twice", p.Name)
		}
		pools[p.Name] = true
		errs = append(errs, p.Vault.validate(fmt.Sprintf("pool %q: vault_auth", p.Name))...)
	}
	checkTerraformEnv := func(where string, env map[string]string) {
		for k := range env {
			// A CLI config (provider mirrors, plugin cache) is the one reserved name an operator may set.
			reserved := slices.Contains(ReservedEnv, k) && k != "TF_CLI_CONFIG_FILE"
			if !envNameRE.MatchString(k) || reserved || strings.HasPrefix(k, "TF_VAR_") {
				bad("%sterraform.env: %q cannot be set here", where, k)
			}
		}
	}
	checkTerraformEnv("", c.Terraform.Env)
	if len(c.Projects) == 0 {
		bad("projects: at least one project is required")
	}

	seenProjects := map[string]bool{}
	for i, p := range c.Projects {
		where := fmt.Sprintf("projects[%d]", i)
		if p.Name != "" {
			where = fmt.Sprintf("project %q", p.Name)
		}
		if !nameRE.MatchString(p.Name) {
			bad("%s: name %q must be lowercase letters, digits, - and _", where, p.Name)
		}
		if seenProjects[p.Name] {
			bad("%s: defined twice", where)
		}
		seenProjects[p.Name] = true
		if !repoRE.MatchString(p.Repo) {
			bad("%s: repo %q must be owner/name", where, p.Repo)
		}
		if err := checkRelDir(p.Dir); err != nil {
			bad("%s: dir: %v", where, err)
		}
		if len(p.Environments) == 0 {
			bad("%s: at least one environment is required", where)
		}
		if p.Terraform != nil && (p.Terraform.Path == "" || p.Terraform.Version == "") {
			bad("%s: terraform needs both path and version", where)
		}
		if p.Terraform != nil {
			checkTerraformEnv(where+": ", p.Terraform.Env)
		}
		seenEnvs := map[string]bool{}
		for j, e := range p.Environments {
			ew := fmt.Sprintf("%s environments[%d]", where, j)
			if e.Name != "" {
				ew = fmt.Sprintf("%s environment %q", where, e.Name)
			}
			if !nameRE.MatchString(e.Name) {
				bad("%s: name %q must be lowercase letters, digits, - and _", ew, e.Name)
			}
			if seenEnvs[e.Name] {
				bad("%s: defined twice", ew)
			}
			if e.Requires != "" && !seenEnvs[e.Requires] {
				bad("%s: requires %q, which must be an earlier environment of the project", ew, e.Requires)
			}
			if e.Requires == "" && e.Soak > 0 {
				bad("%s: soak without requires", ew)
			}
			if !pools[e.Pool] {
				bad("%s: pool %q is not defined under pools", ew, e.Pool)
			}
			seenEnvs[e.Name] = true
			errs = append(errs, e.validate(ew)...)
			// A plan whose runner died is taken over once its job has been
			// silent for the visibility timeout and the next poll (half of
			// it); the lease, refreshed every third of lock_ttl, must still
			// hold then, or the plan fails instead.
			if vis := c.Runner.VisibilityTimeout; !c.Runner.IsEmbedded() && e.LockTTL < 3*vis {
				bad("%s: lock_ttl %v must be at least 3× runner.visibility_timeout (%v): a plan whose runner dies is taken over only after the visibility timeout, and by then a shorter lease has run out", ew, e.LockTTL, vis)
			}
			errs = append(errs, p.PolicyFor(&p.Environments[j]).validate(ew+": policy")...)
		}
	}
	errs = append(errs, c.Signing.validate()...)
	errs = append(errs, c.validateIdentities()...)
	return errors.Join(errs...)
}

func (e *Environment) validate(where string) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{where}, args...)...))
	}
	if *e.Protected && e.RequiredApprovals < 2 {
		bad("required_approvals is %d; a protected environment needs at least 2", e.RequiredApprovals)
	}
	if e.RequiredApprovals < 1 {
		bad("required_approvals must be at least 1")
	}
	if e.Approvers.Empty() {
		bad("approvers: nobody could approve a plan; list users or groups")
	}
	for _, err := range e.Approvers.validate("approvers") {
		bad("%v", err)
	}
	for _, err := range e.Planners.validate("planners") {
		bad("%v", err)
	}
	for _, err := range validateRequirements(e.Requirements) {
		bad("%v", err)
	}
	for _, ch := range e.Channels {
		if !channelRE.MatchString(ch) {
			bad("channels: %q is not a Slack channel ID (C…)", ch)
		}
	}
	if err := checkRelDir(e.Dir); err != nil {
		bad("dir: %v", err)
	}
	if e.Workspace != "" && !workspaceRE.MatchString(e.Workspace) {
		bad("workspace %q must be letters, digits, - and _", e.Workspace)
	}
	for _, vf := range e.VarFiles {
		if err := checkRelDir(vf); err != nil || vf == "" {
			bad("var_files: %q must be a relative path inside the repository", vf)
		}
	}
	for name, d := range map[string]Duration{"lock_ttl": e.LockTTL, "plan_ttl": e.PlanTTL,
		"plan_timeout": e.PlanTimeout, "apply_timeout": e.ApplyTimeout} {
		if d < Duration(time.Second) {
			bad("%s must be at least 1s", name)
		}
	}
	if e.Drift != nil {
		if _, err := DriftSchedule(e.Drift.Schedule); err != nil {
			bad("drift.schedule %q: %v", e.Drift.Schedule, err)
		}
		if e.Drift.Channel == "" && len(e.Channels) == 0 {
			bad("drift.channel is needed where the environment has no channels")
		}
	}
	if v := e.Verify; v != nil {
		if !v.Converged && v.Smoke == "" {
			bad("verify: set converged, smoke or both")
		}
		if v.Smoke != "" {
			if p := strings.TrimPrefix(v.Smoke, "./"); checkRelDir(p) != nil || p == "" || strings.ContainsAny(p, " \t\n\\") || filepath.Clean(p) != p {
				bad("verify.smoke %q must be a relative path to a program inside the repository (./scripts/smoke.sh), without .. or arguments", v.Smoke)
			}
		}
		if v.Timeout < 0 || v.Timeout > 0 && v.Timeout < Duration(time.Second) {
			bad("verify.timeout must be at least 1s")
		}
	}
	if e.Vault.Apply.TTL < e.ApplyTimeout {
		bad("vault.apply.ttl (%v) is shorter than apply_timeout (%v): the credentials would die mid-apply",
			e.Vault.Apply.TTL, e.ApplyTimeout)
	}
	errs = append(errs, e.Vault.Apply.validate(where+": vault.apply")...)
	if e.Vault.Plan != nil {
		errs = append(errs, e.Vault.Plan.validate(where+": vault.plan")...)
	}
	if e.BreakGlass != nil {
		errs = append(errs, e.BreakGlass.validate(where+": breakglass")...)
	}
	return errs
}

func (b *BreakGlass) validate(where string) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{where}, args...)...))
	}
	if b.OnCall.Empty() {
		bad("oncall: nobody could request; list users or groups")
	}
	for _, err := range b.OnCall.validate("oncall") {
		bad("%v", err)
	}
	if b.MaxTTL < Duration(time.Minute) {
		bad("max_ttl must be at least 1m")
	}
	if n := b.ApprovalsNeeded(); n != 0 && n != 1 {
		bad("approvals is %d; it must be 1 (another person agrees) or 0 (self-service, reviewed afterwards)", n)
	}
	if b.Role == "" {
		bad("role is required (the Vault token role emergency tokens are created from)")
	}
	if len(b.Policies) == 0 {
		bad("policies: list the policies an emergency token gets")
	}
	for _, p := range b.Policies {
		if p == "root" || p == "" {
			bad("policies: %q cannot be granted", p)
		}
	}
	if b.WrapTTL < Duration(30*time.Second) || b.WrapTTL > Duration(time.Hour) {
		bad("wrap_ttl must be between 30s and 1h")
	}
	if !channelRE.MatchString(b.Channel) {
		bad("channel: %q is not a Slack channel ID (C…); every grant is announced there", b.Channel)
	}
	if b.RemindEvery < Duration(time.Minute) {
		bad("remind_every must be at least 1m")
	}
	return errs
}

func (cr *Credential) validate(where string) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{where}, args...)...))
	}
	if cr.Role == "" {
		bad("role is required (a Vault token role to mint child tokens from)")
	}
	if cr.TTL < Duration(time.Second) {
		bad("ttl must be at least 1s")
	}
	if cr.NumUses < len(cr.Secrets) {
		bad("num_uses (%d) is less than the number of secrets to read (%d)", cr.NumUses, len(cr.Secrets))
	}
	seen := map[string]bool{}
	for _, s := range cr.Secrets {
		if !vaultPathR.MatchString(s.Path) {
			bad("secrets: path %q is not a Vault path", s.Path)
		}
		if len(s.Env) == 0 {
			bad("secrets: %q maps no fields to environment variables", s.Path)
		}
		for env, field := range s.Env {
			switch {
			case strings.HasPrefix(env, "TF_VAR_"):
				bad("secrets: %q: variables are saved in the plan file; map secrets to provider environment variables instead", env)
			case !envNameRE.MatchString(env) || slices.Contains(ReservedEnv, env):
				bad("secrets: %q cannot be set from a secret", env)
			case seen[env]:
				bad("secrets: %q is set by two secrets", env)
			case field == "":
				bad("secrets: %q names no field of %q", env, s.Path)
			}
			seen[env] = true
		}
	}
	return errs
}

func checkRelDir(d string) error {
	if d == "" {
		return nil
	}
	if strings.HasPrefix(d, "/") || slices.Contains(strings.Split(d, "/"), "..") {
		return fmt.Errorf("%q must be a relative path inside the repository", d)
	}
	return nil
}

// Errors from Resolve.
var (
	ErrUnknownProject = errors.New("unknown project")
	ErrUnknownEnv     = errors.New("unknown environment")
	ErrNeedProject    = errors.New("project needed")
)

// LookupError says what could not be resolved and what exists.
type LookupError struct {
	Err       error
	Name      string
	Available []string
}

func (e *LookupError) Error() string {
	switch {
	case errors.Is(e.Err, ErrNeedProject):
		return fmt.Sprintf("name the project: several define %q (projects: %s)", e.Name, strings.Join(e.Available, ", "))
	default:
		return fmt.Sprintf("%v %q (known: %s)", e.Err, e.Name, strings.Join(e.Available, ", "))
	}
}
func (e *LookupError) Unwrap() error { return e.Err }

// Resolve finds an environment. project may be empty when only one project
// defines an environment of that name.
func (c *Config) Resolve(project, env string) (*Project, *Environment, error) {
	var candidates []*Project
	for i := range c.Projects {
		p := &c.Projects[i]
		if project == "" || p.Name == project {
			candidates = append(candidates, p)
		}
	}
	if len(candidates) == 0 {
		return nil, nil, &LookupError{Err: ErrUnknownProject, Name: project, Available: c.projectNames()}
	}
	var found []*Project
	for _, p := range candidates {
		if p.Env(env) != nil {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		var names []string
		for _, p := range candidates {
			for _, e := range p.Environments {
				names = append(names, e.Name)
			}
		}
		return nil, nil, &LookupError{Err: ErrUnknownEnv, Name: env, Available: unique(names)}
	case 1:
		return found[0], found[0].Env(env), nil
	}
	var names []string
	for _, p := range found {
		names = append(names, p.Name)
	}
	return nil, nil, &LookupError{Err: ErrNeedProject, Name: env, Available: names}
}

// Env returns the named environment of p, or nil.
func (p *Project) Env(name string) *Environment {
	for i := range p.Environments {
		if p.Environments[i].Name == name {
			return &p.Environments[i]
		}
	}
	return nil
}

func (c *Config) projectNames() []string {
	var names []string
	for _, p := range c.Projects {
		names = append(names, p.Name)
	}
	return names
}

func unique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// TerraformFor is the binary, version and environment a project's plans
// run with: the project's terraform, if it has one, else the top-level one.
// The project's env is added to the top-level env, and wins where both name
// a variable.
func (c *Config) TerraformFor(p *Project) Terraform {
	if p.Terraform == nil {
		return c.Terraform
	}
	t := *p.Terraform
	t.Env = maps.Clone(c.Terraform.Env)
	if t.Env == nil {
		t.Env = map[string]string{}
	}
	maps.Copy(t.Env, p.Terraform.Env)
	return t
}

func (a VaultAuth) validate(where string) []error {
	switch a.Method {
	case "token", "approle":
	case "kubernetes":
		if a.Role == "" {
			return []error{fmt.Errorf("%s.role is required with method kubernetes", where)}
		}
	default:
		return []error{fmt.Errorf("%s.method: %q is not token, approle or kubernetes", where, a.Method)}
	}
	return nil
}

// PoolFor returns the named pool ("default" is the top-level Vault login).
func (c *Config) PoolFor(name string) (Pool, bool) {
	if name == DefaultPool {
		for _, p := range c.Pools {
			if p.Name == DefaultPool {
				return p, true
			}
		}
		return Pool{Name: DefaultPool, Vault: c.Vault.Auth}, true
	}
	for _, p := range c.Pools {
		if p.Name == name {
			return p, true
		}
	}
	return Pool{}, false
}

// WorkDir is the directory inside the repository terraform runs in.
func (p *Project) WorkDir(e *Environment) string {
	if e.Dir != "" {
		return e.Dir
	}
	return p.Dir
}

// Duration is a time.Duration written as "15m" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		// A TypeError lets decoding go on, so every other problem in the
		// file is reported with this one.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration like 90s or 15m", n.Line, s)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d the way UnmarshalYAML reads it.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// validateSandbox checks the sandbox settings: nothing of twokey's own may
// be made visible to a run.
func (c *Config) validateSandbox() []error {
	var errs []error
	sb := c.Runner.Sandbox
	if sb.Mode != SandboxAuto && sb.Mode != SandboxNone {
		errs = append(errs, fmt.Errorf("runner.sandbox.mode: %q is not auto or none", sb.Mode))
	}
	data := filepath.Clean(c.DataDir)
	for _, l := range []struct {
		name  string
		paths []string
	}{{"read_only", sb.ReadOnly}, {"writable", sb.Writable}} {
		for _, p := range l.paths {
			switch cp := filepath.Clean(p); {
			case !filepath.IsAbs(p):
				errs = append(errs, fmt.Errorf("runner.sandbox.%s: %q is not an absolute path", l.name, p))
			case cp == "/" || within(data, cp) || within(cp, data):
				errs = append(errs, fmt.Errorf("runner.sandbox.%s: %q overlaps data_dir %q, which holds other runs and mirrors", l.name, p, c.DataDir))
			}
		}
	}
	if sb.UID < 0 || sb.GID < 0 {
		errs = append(errs, fmt.Errorf("runner.sandbox.uid and gid must not be negative"))
	}
	for _, p := range c.Projects {
		for _, src := range p.Providers {
			if n := strings.Count(src, "/"); n < 1 || n > 2 || strings.ContainsAny(src, " *") {
				errs = append(errs, fmt.Errorf("project %s: providers: %q is not a provider source like hashicorp/aws", p.Name, src))
			}
		}
	}
	return errs
}

// within reports whether path is dir or inside it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// Policy is how an environment's plans are checked before anyone is asked
// to approve them: the Rego policies in Dir (conftest-compatible; see
// package policy), and who may override a denial.
type Policy struct {
	// Dir is a directory of .rego files on the runner's host — never the
	// pull request's, whose author could rewrite the rules.
	Dir string `yaml:"dir"`
	// Owners may override a denial; their overrides count like approvals
	// and are recorded. Empty: a denial cannot be overridden.
	Owners Who `yaml:"owners"`
	// Overrides is how many distinct owners must override a denial
	// (default 1).
	Overrides int `yaml:"overrides"`
	// Groups names the groups policies may require an approval from
	// (required_groups): a policy's name → who is in it. A policy that
	// requires a group not named here fails the plan.
	Groups map[string]Who `yaml:"groups"`
}

// GroupNamed is who is in the group policies call name.
func (pol *Policy) GroupNamed(name string) (Who, bool) {
	if pol == nil {
		return Who{}, false
	}
	w, ok := pol.Groups[name]
	return w, ok
}

// OverridesNeeded is how many owners' overrides lift a denial: 0 when
// nobody may override.
func (pol *Policy) OverridesNeeded() int {
	if pol == nil || pol.Owners.Empty() {
		return 0
	}
	return max(pol.Overrides, 1)
}

// PolicyFor is the policy that applies to e: its own, else the project's;
// nil when neither has one.
func (p *Project) PolicyFor(e *Environment) *Policy {
	if e != nil && e.Policy != nil {
		return e.Policy
	}
	return p.Policy
}

func (pol *Policy) validate(where string) []error {
	if pol == nil {
		return nil
	}
	var errs []error
	if pol.Dir == "" || !filepath.IsAbs(pol.Dir) {
		errs = append(errs, fmt.Errorf("%s: dir %q must be an absolute path on the runner's host", where, pol.Dir))
	}
	for _, err := range pol.Owners.validate("owners") {
		errs = append(errs, fmt.Errorf("%s: %w", where, err))
	}
	if pol.Overrides < 0 {
		errs = append(errs, fmt.Errorf("%s: overrides must not be negative", where))
	}
	for _, name := range slices.Sorted(maps.Keys(pol.Groups)) {
		who := pol.Groups[name]
		if who.Empty() {
			errs = append(errs, fmt.Errorf("%s: groups.%s lists nobody", where, name))
		}
		for _, err := range who.validate("groups." + name) {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	return errs
}
