"""Names and paths shared by the full command line and the quick entry
(:mod:`agent.cli.quick`), which must not import the rest of the agent."""

DEFAULT_CONFIG_PATH = "/etc/acme-agent/agent.toml"
CONFIG_ENV = "ACME_AGENT_CONFIG"
DEFAULT_STATE_DIR = "/var/lib/acme-agent"
