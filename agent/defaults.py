"""Names and paths shared by the full command line and the quick entry (:mod:`.quick`),
which must not import the rest of the agent."""

DEFAULT_CONFIG_PATH = "/etc/acme-agent/agent.toml"
CONFIG_ENV = "ACME_AGENT_CONFIG"
DEFAULT_STATE_DIR = "/var/lib/acme-agent"
# The daemon runs issuance in child `renew` processes; they hand back request durations here.
DURATIONS_ENV = "ACME_AGENT_DURATIONS_FILE"
